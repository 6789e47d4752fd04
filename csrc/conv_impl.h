/* The data movement of convolution and max pooling, written once for an element type T and
 * included by conv.c for float and for double (SUF names the flavour). No arithmetic worth
 * vectorising by hand lives here: the convolution's multiply-adds are the GEMM's. What is here
 * is copying, and the copies are short runs, which copy_run and add_run move a vector at a time.
 *
 * A window is described by struct tge_window (kernels.h): input planes H x W, kernel kh x kw,
 * stride, dilation, the padding before the first row and column (the padding after the last
 * needs no number: a read past the edge is a read of zero), and the output's OH x OW.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

/* The output columns j whose input column col0 + j sw lies inside 0..W-1: [*lo, *hi) (and the
 * same for rows: FN(inside)(row0, sh, H, OH, ...)). Counted
 * in from the ends rather than divided out (an integer division costs ~40 cycles, and pooling
 * asks this for every row of outputs). */
static inline void FN(inside)(long col0, long sw, long W, long OW, long *lo, long *hi)
{
    long l = 0, h = OW;
    while (h > 0 && col0 + (h - 1) * sw >= W) h--;
    while (l < h && col0 + l * sw < 0) l++;
    *lo = l;
    *hi = h;
}

/* im2col and col2im move runs as short as one window row (8 elements for conv2 of the lecture's
 * CNN), ~50,000 of them per call. A 16-byte vector at a time, with no set-up per run, they took
 * half the instructions of the loops GCC vectorised for any length (callgrind). */
typedef T FN(vec) __attribute__((vector_size(16), aligned(sizeof(T)), may_alias));
#define V FN(vec)
#define VL ((long)(16 / sizeof(T)))

/* dst[0..n) = src[0..n), for n >= VL. When n is not a multiple of VL the last vector overlaps
 * the one before it: copying an element twice is harmless. (The empty asm hides j from GCC, which
 * would otherwise turn the loop into a call to memcpy: dearer than the copy for 8 elements.) */
static inline void FN(copy_run)(T *restrict dst, const T *restrict src, long n)
{
    for (long j = 0; j < n - VL; j += VL) {
        __asm__("" : "+r"(j));
        *(V *)(dst + j) = *(const V *)(src + j);
    }
    *(V *)(dst + n - VL) = *(const V *)(src + n - VL);
}

/* dst[0..n) += src[0..n) (no overlapping trick here: an element added twice would count twice). */
static inline void FN(add_run)(T *restrict dst, const T *restrict src, long n)
{
    long j = 0;
    for (; j + VL <= n; j += VL) *(V *)(dst + j) += *(const V *)(src + j);
    for (; j < n; j++) dst[j] += src[j];
}

/* Row (c, p, q) of cols: every output pixel's element p, q of channel c, for all N images.
 * The window's numbers are copied to locals: the stores below could otherwise alias them. */
static void FN(im2col_row)(const struct tge_window *w, long c, long p, long q, const T *restrict x,
                           T *restrict row)
{
    const long N = w->N, C = w->C, H = w->H, W = w->W, OH = w->OH, OW = w->OW, sh = w->sh,
               sw = w->sw, plane = H * W, col0 = q * w->dw - w->pl,  /* what column 0 reads */
               row0 = p * w->dh - w->pt;                              /* what row 0 reads */
    long lo, hi, top, bottom;
    FN(inside)(col0, sw, W, OW, &lo, &hi);
    FN(inside)(row0, sh, H, OH, &top, &bottom);
    const int whole_rows = sw == 1 && lo == 0 && hi == OW && OW >= VL;   /* the usual case */
    for (long n = 0; n < N; n++, row += OH * OW) {
        const T *xc = x + (n * C + c) * plane + row0 * W + col0;
        for (long j = 0; j < top * OW; j++) row[j] = 0;             /* rows read from the padding */
        for (long j = bottom * OW; j < OH * OW; j++) row[j] = 0;
        if (whole_rows) {
            for (long i = top; i < bottom; i++) FN(copy_run)(row + i * OW, xc + i * sh * W, OW);
            continue;
        }
        for (long i = top; i < bottom; i++) {
            const T *xr = xc + i * sh * W;
            T *out = row + i * OW;
            for (long j = 0; j < lo; j++) out[j] = 0;
            for (long j = lo; j < hi; j++) out[j] = xr[j * sw];
            for (long j = hi; j < OW; j++) out[j] = 0;
        }
    }
}

typedef struct {
    const struct tge_window *w;
    const T *x;
    T *cols;
    long row0, row1;   /* this job's rows of cols */
} FN(rows_job);

static void FN(im2col_rows)(void *arg)
{
    FN(rows_job) *job = arg;
    const struct tge_window *w = job->w;
    const long length = w->N * w->OH * w->OW;
    for (long row = job->row0; row < job->row1; row++) {
        long c = row / (w->kh * w->kw), p = row / w->kw % w->kh, q = row % w->kw;
        FN(im2col_row)(w, c, p, q, job->x, job->cols + row * length);
    }
}

/* cols[(c kh + p) kw + q][(n OH + i) OW + j] = x[n][c][i sh + p dh - pt][j sw + q dw - pl]:
 * the rows split between threads. */
static void FN(im2col)(const struct tge_window *w, const T *x, T *cols, int nthreads)
{
    const long rows = w->C * w->kh * w->kw;
    long chunk = tge_piece_length(rows, nthreads, 1);
    FN(rows_job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long r0 = 0; r0 < rows; r0 += chunk, n++)
        jobs[n] = (FN(rows_job)){w, x, cols, r0, r0 + chunk < rows ? r0 + chunk : rows};
    tge_parallel(FN(im2col_rows), jobs, sizeof(FN(rows_job)), n);
}

typedef struct {
    const struct tge_window *w;
    const T *cols;
    T *dx;
    long c0, c1;   /* this job's channels: it alone writes their planes of dx */
} FN(channels_job);

static void FN(col2im_channels)(void *arg)
{
    FN(channels_job) *job = arg;
    const struct tge_window *w = job->w;
    const long N = w->N, C = w->C, H = w->H, W = w->W, OH = w->OH, OW = w->OW, sh = w->sh,
               sw = w->sw, kh = w->kh, kw = w->kw, plane = H * W, length = N * OH * OW;
    T *restrict dx = job->dx;
    for (long n = 0; n < N; n++)
        for (long c = job->c0; c < job->c1; c++)
            for (long i = 0; i < plane; i++) dx[(n * C + c) * plane + i] = 0;
    for (long c = job->c0; c < job->c1; c++)
        for (long p = 0; p < kh; p++)
            for (long q = 0; q < kw; q++) {
                const T *restrict row = job->cols + ((c * kh + p) * kw + q) * length;
                const long col0 = q * w->dw - w->pl;
                long lo, hi;
                FN(inside)(col0, sw, W, OW, &lo, &hi);
                const long row0 = p * w->dh - w->pt;
                long top, bottom;   /* rows outside [top, bottom) read from the padding: dropped */
                FN(inside)(row0, sh, H, OH, &top, &bottom);
                const int whole_rows = sw == 1 && lo == 0 && hi == OW;   /* the usual case */
                for (long n = 0; n < N; n++, row += OH * OW) {
                    T *dxc = dx + (n * C + c) * plane + row0 * W + col0;
                    if (whole_rows) {
                        for (long i = top; i < bottom; i++)
                            FN(add_run)(dxc + i * sh * W, row + i * OW, OW);
                        continue;
                    }
                    for (long i = top; i < bottom; i++) {
                        T *restrict dxr = dxc + i * sh * W;
                        const T *restrict in = row + i * OW;
                        for (long j = lo; j < hi; j++) dxr[j * sw] += in[j];
                    }
                }
            }
}

/* The adjoint of im2col: dx = 0, then each entry of cols added onto the pixel it was read from
 * (where windows overlap, their contributions add). Threads split the channels. */
static void FN(col2im)(const struct tge_window *w, const T *cols, T *dx, int nthreads)
{
    long chunk = tge_piece_length(w->C, nthreads, 1);
    FN(channels_job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long c0 = 0; c0 < w->C; c0 += chunk, n++)
        jobs[n] = (FN(channels_job)){w, cols, dx, c0, c0 + chunk < w->C ? c0 + chunk : w->C};
    tge_parallel(FN(col2im_channels), jobs, sizeof(FN(channels_job)), n);
}

/* The GEMM computes a convolution channel-major, rows[o][n][pixel] (one row per filter), and
 * PyTorch's layout is batch-major, y[n][o][pixel]: swapping the two leading axes is one pass over
 * the output each way, with the bias added in the forward pass and its gradient, each channel's
 * sum, taken in the backward one (in double: the sum runs over every pixel of the batch).
 * A ReLU right after the convolution can ride along (tinygrad_edu.jit asks for it when nothing
 * else reads the convolution's own output): forward, y = max(rows + bias, 0) written as relu
 * writes it; backward, g masked by the ReLU's output as relu_backward masks it, before the swap.
 * Both save a pass over the activations, and every number is the one the two passes give. */
typedef struct {
    long O, N, P;      /* channels, images, pixels per plane */
    const T *from;
    T *to;
    const T *bias;     /* batch_major: added to each channel, or NULL */
    int relu;          /* batch_major: then the ReLU */
    const T *mask;     /* channel_major: a ReLU's output y (laid out as from): from is zeroed
                          where y <= 0, or NULL */
    T *sums;           /* channel_major: each channel's sum, or NULL */
    long o0, o1;       /* this job's channels */
} FN(swap_job);

static void FN(batch_major_channels)(void *arg)
{
    FN(swap_job) *job = arg;
    const long O = job->O, N = job->N, P = job->P;
    for (long o = job->o0; o < job->o1; o++) {
        const T b = job->bias ? job->bias[o] : 0;
        for (long n = 0; n < N; n++) {
            const T *restrict from = job->from + (o * N + n) * P;
            T *restrict to = job->to + (n * O + o) * P;
            if (job->relu)   /* relu's own test: NaN < 0 is false, so NaN stays */
                for (long i = 0; i < P; i++) {
                    T v = from[i] + b;
                    to[i] = v < 0 ? 0 : v;
                }
            else
                for (long i = 0; i < P; i++) to[i] = from[i] + b;
        }
    }
}

static void FN(channel_major_channels)(void *arg)
{
    FN(swap_job) *job = arg;
    const long O = job->O, N = job->N, P = job->P;
    for (long o = job->o0; o < job->o1; o++) {
        double sum = 0;
        for (long n = 0; n < N; n++) {
            const T *restrict from = job->from + (n * O + o) * P;
            const T *restrict mask = job->mask ? job->mask + (n * O + o) * P : NULL;
            T *restrict to = job->to + (o * N + n) * P;
            /* one plane's sum in four vector accumulators (GCC keeps a scalar sum's order, so
             * would not vectorise it), then the planes' sums added in double */
            V acc[4] = {{0}};
            long i = 0;
            for (; i + 4 * VL <= P; i += 4 * VL)
                for (int u = 0; u < 4; u++) {
                    V v = *(const V *)(from + i + u * VL);
                    if (mask) {   /* relu_backward's rule, 0 where y <= 0: keep v's bits where not */
                        V y = *(const V *)(mask + i + u * VL);
                        v = (V)((__typeof__(y <= y))v & ~(y <= (V){0}));
                    }
                    *(V *)(to + i + u * VL) = v;
                    acc[u] += v;
                }
            T run = 0;
            for (; i < P; i++) {
                T v = mask && mask[i] <= 0 ? 0 : from[i];
                to[i] = v;
                run += v;
            }
            for (int u = 0; u < 4; u++)
                for (long l = 0; l < VL; l++) run += acc[u][l];
            sum += run;
        }
        if (job->sums) job->sums[o] = (T)sum;
    }
}

static void FN(swap_leading_axes)(void (*fn)(void *), long O, long N, long P, const T *from, T *to,
                                  const T *bias, int relu, const T *mask, T *sums, int nthreads)
{
    long chunk = tge_piece_length(O, nthreads, 1);
    FN(swap_job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long o0 = 0; o0 < O; o0 += chunk, n++)
        jobs[n] = (FN(swap_job)){O, N, P, from, to, bias, relu, mask, sums, o0,
                                 o0 + chunk < O ? o0 + chunk : O};
    tge_parallel(fn, jobs, sizeof(FN(swap_job)), n);
}

typedef struct {
    const struct tge_window *w;
    const T *x;
    T *y;
    int64_t *argmax;
    long plane0, plane1;   /* this job's (n, c) planes */
} FN(pool_job);

/* Where the largest element of a window (rows r0..r1-1, columns c0..c1-1 of a plane of width W)
 * is: the first of equal ones in row-major order, the first NaN over any number. Without a
 * branch on the data (on real data a comparison is a coin toss for the branch predictor: with
 * branches this took 30x longer): the maximum first, then its first position, found by going
 * through the window backwards and keeping the last match with a mask instead of an if. */
static inline long FN(argmax_of_window)(const T *restrict x, long W, long r0, long r1, long c0,
                                        long c1)
{
    T max = -INFINITY;
    int nan = 0;
    for (long r = r0; r < r1; r++)
        for (long c = c0; c < c1; c++) {
            T v = x[r * W + c];
            max = v > max ? v : max;
            nan |= v != v;
        }
    long best = r0 * W + c0;   /* stays, for a window of -inf only: its first element */
    for (long r = r1 - 1; r >= r0; r--)
        for (long c = c1 - 1; c >= c0; c--) {
            T v = x[r * W + c];
            long match = nan ? v != v : v == max;
            best += (r * W + c - best) & -match;
        }
    return best;
}

/* The usual pooling, 2x2 windows side by side (kernel 2, stride 2, no padding), one row of
 * outputs from input rows x and x + W, as selects the compiler turns into vector code (4x
 * faster than window by window here). Returns 0, having written nothing that counts, if the
 * rows hold a NaN: the general loop then does the row. */
static int FN(max_pool_2x2_row)(const T *restrict x, long W, long OW, T *restrict y,
                                int64_t *restrict argmax, long first)
{
    const T *restrict below = x + W;
    int nan = 0;
    enum { BLOCK = 256 };
    int32_t offset[BLOCK];   /* in 32 bits, widened after: with int64 flags GCC's code was 2x slower */
    for (long j0 = 0; j0 < OW; j0 += BLOCK) {
        const long n = OW - j0 < BLOCK ? OW - j0 : BLOCK;
        for (long j = 0; j < n; j++) {
            const long at = 2 * (j0 + j);
            T a = x[at], b = x[at + 1], c = below[at], d = below[at + 1];
            T top = a > b ? a : b, bottom = c > d ? c : d, max = top > bottom ? top : bottom;
            /* the first of the four equal to the maximum, in row-major order, by arithmetic */
            int32_t is_a = a == max, is_b = (b == max) & !is_a, is_c = (c == max) & !(is_a | is_b),
                    is_d = !(is_a | is_b | is_c);
            nan |= (a != a) | (b != b) | (c != c) | (d != d);
            y[j0 + j] = max;
            offset[j] = is_b + is_c * (int32_t)W + is_d * (int32_t)(W + 1);
        }
        for (long j = 0; j < n; j++) argmax[j0 + j] = first + 2 * (j0 + j) + offset[j];
    }
    return !nan;
}

/* For each window: its largest element, and where it is (r W + col within its plane); the
 * padding is never chosen. */
static void FN(max_pool_planes)(void *arg)
{
    FN(pool_job) *job = arg;
    const struct tge_window *w = job->w;
    const long H = w->H, W = w->W, OH = w->OH, OW = w->OW, kh = w->kh, kw = w->kw, sh = w->sh,
               sw = w->sw, pt = w->pt, pl = w->pl, in_plane = H * W, out_plane = OH * OW;
    const int tiles_2x2 = kh == 2 && kw == 2 && sh == 2 && sw == 2 && pt == 0 && pl == 0
                          && W < (1L << 30);   /* its offsets within a window are 32-bit */
    for (long k = job->plane0; k < job->plane1; k++) {
        const T *restrict x = job->x + k * in_plane;
        T *restrict y = job->y + k * out_plane;
        int64_t *restrict argmax = job->argmax + k * out_plane;
        for (long i = 0; i < OH; i++) {
            if (tiles_2x2 && FN(max_pool_2x2_row)(x + 2 * i * W, W, OW, y + i * OW,
                                                  argmax + i * OW, 2 * i * W))
                continue;
            long r0 = i * sh - pt, r1 = r0 + kh;   /* the window's rows inside the plane */
            if (r0 < 0) r0 = 0;
            if (r1 > H) r1 = H;
            for (long j = 0; j < OW; j++) {
                long c0 = j * sw - pl, c1 = c0 + kw;
                if (c0 < 0) c0 = 0;
                if (c1 > W) c1 = W;
                long best = FN(argmax_of_window)(x, W, r0, r1, c0, c1);
                y[i * OW + j] = x[best];
                argmax[i * OW + j] = best;
            }
        }
    }
}

static void FN(max_pool)(const struct tge_window *w, const T *x, T *y, int64_t *argmax, int nthreads)
{
    const long planes = w->N * w->C;
    long chunk = tge_piece_length(planes, nthreads, 1);
    FN(pool_job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long k0 = 0; k0 < planes; k0 += chunk, n++)
        jobs[n] = (FN(pool_job)){w, x, y, argmax, k0, k0 + chunk < planes ? k0 + chunk : planes};
    tge_parallel(FN(max_pool_planes), jobs, sizeof(FN(pool_job)), n);
}

/* dx = 0, then each output's gradient added onto its window's arg-max (one plane at a time).
 * Returns how many arg-max positions lay outside their plane (skipped; 0 for max_pool's own):
 * checking here costs nothing, where checking before in NumPy took two passes. */
static long FN(max_pool_backward)(const struct tge_window *w, const T *restrict g,
                                  const int64_t *restrict argmax, T *restrict dx)
{
    const long planes = w->N * w->C, in_plane = w->H * w->W, out_plane = w->OH * w->OW;
    long outside = 0;
    for (long k = 0; k < planes; k++) {
        T *dxk = dx + k * in_plane;
        for (long i = 0; i < in_plane; i++) dxk[i] = 0;
        for (long i = 0; i < out_plane; i++) {
            int64_t at = argmax[k * out_plane + i];
            if ((uint64_t)at < (uint64_t)in_plane)   /* also false for a negative position */
                dxk[at] += g[k * out_plane + i];
            else
                outside++;
        }
    }
    return outside;
}

#undef V
#undef VL
#undef CAT_
#undef CAT
#undef FN
