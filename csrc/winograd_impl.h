/* Winograd's minimal filtering on 8 x 8 tiles (tinygrad_edu/fast.py's WinogradConv2d says the
 * math): the four transforms between images and tiles, written once for an element type T and
 * included by kernels.c once per (element type, instruction set) as gemm_impl.h is (SUF names
 * the flavour). The products between them are GEMMs.
 *
 * Each transform is two small matrix products per tile, L X R^T with L, R at most 8 x 8. A
 * tile's 64 transformed numbers go to 64 planes of the tiles' array, (64, channels, tiles):
 * tile t of channel c is element t of row c in each plane.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)
#define TILE 8
#define SUMS 256   /* output_backward's channels a pass: their sums live on the stack */

/* The tiles are transformed BLOCK at a time, one vector lane per tile (64 bytes: 16 floats or 8
 * doubles): every multiply-add then works on BLOCK tiles at once, and each of a tile block's 64
 * transformed numbers is one run of BLOCK in its plane, a whole cache line, not one number. */
#define BLOCK ((long)(64 / sizeof(T)))
typedef T FN(tile_block) __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));
#define BLOCKV FN(tile_block)

/* out = L X R^T on BLOCK tiles at once: X holds TILE x TILE vectors (element [p][q] of every tile),
 * L and R are TILE x TILE matrices (row-major; a smaller one padded with zeros). Only what can be
 * nonzero is computed: X's first `depth` rows and columns are read (the rest are 0), and out's
 * first `rows` x `cols` elements written (the rows of L and of R that are used). */
static inline void FN(sandwich)(const T L[TILE][TILE], const BLOCKV X[TILE][TILE],
                                const T R[TILE][TILE], long rows, long cols, long depth,
                                BLOCKV out[TILE][TILE])
{
    BLOCKV left[TILE][TILE];
    for (long a = 0; a < rows; a++)        /* left = L X */
        for (long q = 0; q < depth; q++) {
            BLOCKV sum = L[a][0] * X[0][q];
            for (long p = 1; p < depth; p++) sum += L[a][p] * X[p][q];
            left[a][q] = sum;
        }
    for (long a = 0; a < rows; a++)        /* out = left R^T */
        for (long b = 0; b < cols; b++) {
            BLOCKV sum = left[a][0] * R[b][0];
            for (long q = 1; q < depth; q++) sum += left[a][q] * R[b][q];
            out[a][b] = sum;
        }
}

/* M (rows x TILE, row-major) as a TILE x TILE matrix, padded with zero rows; transposed: M^T */
static void FN(square)(const T *M, long rows, int transposed, T out[TILE][TILE])
{
    for (int a = 0; a < TILE; a++)
        for (int p = 0; p < TILE; p++) {
            const long i = transposed ? p : a, j = transposed ? a : p;
            out[a][p] = i < rows ? M[i * TILE + j] : 0;
        }
}

/* A block's 64 transformed numbers to or from the tiles' array: X[a][b] is run (a TILE + b) of
 * `count` tiles (BLOCK but for the last block), `plane` numbers apart; lanes past `count` read 0. */
static inline void FN(store_planes)(BLOCKV X[TILE][TILE], T *to, long plane, long count)
{
    for (int a = 0; a < TILE; a++)
        for (int b = 0; b < TILE; b++) {
            T *run = to + (a * TILE + b) * plane;
            if (count == BLOCK)
                *(BLOCKV *)run = X[a][b];
            else
                for (long k = 0; k < count; k++) run[k] = X[a][b][k];
        }
}

static inline void FN(load_planes)(const T *from, long plane, long count, BLOCKV X[TILE][TILE])
{
    for (int a = 0; a < TILE; a++)
        for (int b = 0; b < TILE; b++) {
            const T *run = from + (a * TILE + b) * plane;
            if (count == BLOCK)
                X[a][b] = *(const BLOCKV *)run;
            else
                for (long k = 0; k < BLOCK; k++) X[a][b][k] = k < count ? run[k] : 0;
        }
}

/* A tile's place: its image, and its row and column of tiles in the image's TH x TW. The tiles
 * of a block are visited in order with next_tile: dividing for each (three integer divisions,
 * ~25 cycles each) was the costliest part of the output side's loops. */
typedef struct {
    long n, ty, tx;
} FN(tile_place);

static inline FN(tile_place) FN(tile_at)(long t, long TH, long TW)
{
    return (FN(tile_place)){t / (TH * TW), t / TW % TH, t % TW};
}

static inline void FN(next_tile)(FN(tile_place) *at, long TH, long TW)
{
    if (++at->tx == TW) {
        at->tx = 0;
        if (++at->ty == TH) {
            at->ty = 0;
            at->n++;
        }
    }
}

typedef struct {
    const struct tge_window *w;
    const T *mat;         /* B^T (input side) or A^T (output side), row-major */
    long m;               /* outputs a tile, each way */
    long TH, TW, tiles;   /* tiles an image, each way (ceil(OH / m), ceil(OW / m)), and in all */
    long plane;           /* numbers in each of the tiles' array's 64 planes: channels x tiles */
    const T *from;
    T *to;
    const T *bias;        /* output: added to each channel, or NULL */
    int relu;             /* output: then the ReLU (as batch_major's) */
    const T *mask;        /* output backward: a ReLU's output y; g is 0 where y <= 0; or NULL */
    T *sums;              /* output backward: each channel's sum of g, or NULL */
    int add_sums;         /* output backward: added to sums, not written */
    long c0, c1;          /* this job's channels */
} FN(tiles_job);

static void FN(run_tile_jobs)(void (*fn)(void *), const struct tge_window *w, const T *mat, long m,
                              const T *from, T *to, const T *bias, int relu, const T *mask,
                              T *sums, int add_sums, int nthreads)
{
    const long TH = (w->OH + m - 1) / m, TW = (w->OW + m - 1) / m, tiles = w->N * TH * TW;
    long chunk = tge_piece_length(w->C, nthreads, 1);
    FN(tiles_job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long c0 = 0; c0 < w->C; c0 += chunk, n++)
        jobs[n] = (FN(tiles_job)){w, mat, m, TH, TW, tiles, w->C * tiles, from, to, bias, relu, mask,
                                  sums, add_sums, c0, c0 + chunk < w->C ? c0 + chunk : w->C};
    tge_parallel(fn, jobs, sizeof(FN(tiles_job)), n);
}

/* V[a TILE + b][c][(n TH + ty) TW + tx] = (B^T d B)[a][b], d the tile of x[n][c] whose corner is
 * row ty m - pt, column tx m - pl (0 outside the plane). */
static void FN(winograd_input_channels)(void *arg)
{
    FN(tiles_job) *job = arg;
    const struct tge_window *w = job->w;
    const long C = w->C, H = w->H, W = w->W, m = job->m, TH = job->TH, TW = job->TW,
               tiles = job->tiles, plane = job->plane;
    T BT[TILE][TILE];
    BLOCKV d[TILE][TILE], v[TILE][TILE];
    FN(square)(job->mat, TILE, 0, BT);    /* B^T d B = L d R^T with L = R = B^T */
    for (long t0 = 0; t0 < tiles; t0 += BLOCK)
        for (long c = job->c0; c < job->c1; c++) {   /* channels inner: x is read in order */
            const long count = tiles - t0 < BLOCK ? tiles - t0 : BLOCK;
            FN(tile_place) at = FN(tile_at)(t0, TH, TW);
            for (long k = 0; k < BLOCK; k++, FN(next_tile)(&at, TH, TW)) {
                if (k >= count) {   /* lanes past the last tile: zeros */
                    for (int p = 0; p < TILE; p++)
                        for (int q = 0; q < TILE; q++) d[p][q][k] = 0;
                    continue;
                }
                const T *xc = job->from + (at.n * C + c) * H * W;
                const long row0 = at.ty * m - w->pt, col0 = at.tx * m - w->pl;
                if (row0 >= 0 && row0 + TILE <= H && col0 >= 0 && col0 + TILE <= W) {
                    for (int p = 0; p < TILE; p++)   /* inside the plane: no test per pixel */
                        for (int q = 0; q < TILE; q++) d[p][q][k] = xc[(row0 + p) * W + col0 + q];
                    continue;
                }
                for (int p = 0; p < TILE; p++)
                    for (int q = 0; q < TILE; q++) {
                        const long i = row0 + p, j = col0 + q;
                        d[p][q][k] = i >= 0 && i < H && j >= 0 && j < W ? xc[i * W + j] : 0;
                    }
            }
            FN(sandwich)(BT, d, BT, TILE, TILE, TILE, v);
            FN(store_planes)(v, job->to + c * tiles + t0, plane, count);
        }
}

/* The adjoint: dx[n][c] = the sum over tiles of B dV B^T, each added where its tile was read. */
static void FN(winograd_input_backward_channels)(void *arg)
{
    FN(tiles_job) *job = arg;
    const struct tge_window *w = job->w;
    const long N = w->N, C = w->C, H = w->H, W = w->W, m = job->m, TH = job->TH, TW = job->TW,
               tiles = job->tiles, plane = job->plane;
    T B[TILE][TILE];
    BLOCKV dv[TILE][TILE], dd[TILE][TILE];
    FN(square)(job->mat, TILE, 1, B);     /* B dV B^T = L dV R^T with L = R = B */
    for (long n = 0; n < N; n++)
        for (long i = job->c0 * H * W; i < job->c1 * H * W; i++) job->to[n * C * H * W + i] = 0;
    for (long t0 = 0; t0 < tiles; t0 += BLOCK)
        for (long c = job->c0; c < job->c1; c++) {   /* channels inner: dx is written in order */
            const long count = tiles - t0 < BLOCK ? tiles - t0 : BLOCK;
            FN(load_planes)(job->from + c * tiles + t0, plane, count, dv);
            FN(sandwich)(B, dv, B, TILE, TILE, TILE, dd);
            FN(tile_place) at = FN(tile_at)(t0, TH, TW);
            for (long k = 0; k < count; k++, FN(next_tile)(&at, TH, TW)) {
                T *dx = job->to + (at.n * C + c) * H * W;
                const long row0 = at.ty * m - w->pt, col0 = at.tx * m - w->pl;
                for (int p = 0; p < TILE; p++) {
                    const long i = row0 + p;
                    if (i < 0 || i >= H) continue;
                    for (int q = 0; q < TILE; q++) {
                        const long j = col0 + q;
                        if (j >= 0 && j < W) dx[i * W + j] += dd[p][q][k];
                    }
                }
            }
        }
}

/* y[n][o][ty m + i][tx m + j] = (A^T M A)[i][j] + bias[o] (then the ReLU, if asked), for the
 * outputs inside the OH x OW plane. Here the window's C is O and its H, W are unused. */
static void FN(winograd_output_channels)(void *arg)
{
    FN(tiles_job) *job = arg;
    const struct tge_window *w = job->w;
    const long O = w->C, OH = w->OH, OW = w->OW, m = job->m, TH = job->TH, TW = job->TW,
               tiles = job->tiles, plane = job->plane;
    T AT[TILE][TILE];
    BLOCKV mt[TILE][TILE], y[TILE][TILE];
    FN(square)(job->mat, m, 0, AT);       /* A^T M A = L M R^T with L = R = A^T */
    for (long t0 = 0; t0 < tiles; t0 += BLOCK)
        for (long o = job->c0; o < job->c1; o++) {   /* channels inner: y is written in order */
            const T bias = job->bias ? job->bias[o] : 0;
            const long count = tiles - t0 < BLOCK ? tiles - t0 : BLOCK;
            FN(load_planes)(job->from + o * tiles + t0, plane, count, mt);
            FN(sandwich)(AT, mt, AT, m, m, TILE, y);
            FN(tile_place) at = FN(tile_at)(t0, TH, TW);
            for (long k = 0; k < count; k++, FN(next_tile)(&at, TH, TW)) {
                const long rows = OH - at.ty * m < m ? OH - at.ty * m : m,
                           cols = OW - at.tx * m < m ? OW - at.tx * m : m;
                T *out = job->to + ((at.n * O + o) * OH + at.ty * m) * OW + at.tx * m;
                for (long i = 0; i < rows; i++)
                    for (long j = 0; j < cols; j++) {
                        const T v = y[i][j][k] + bias;
                        out[i * OW + j] = job->relu && v < 0 ? 0 : v;   /* relu's test: NaN stays */
                    }
            }
        }
}

/* The adjoint: dM[a TILE + b][o][tile] = (A g A^T)[a][b] for g the tile's m x m gradients (0 past
 * the plane's edge, and where the ReLU's output is <= 0 when a mask is given), and sums[o] the
 * channel's total of g (in double). */
static void FN(winograd_output_backward_channels)(void *arg)
{
    FN(tiles_job) *job = arg;
    const struct tge_window *w = job->w;
    const long O = w->C, OH = w->OH, OW = w->OW, m = job->m, TH = job->TH, TW = job->TW,
               tiles = job->tiles, plane = job->plane;
    T A[TILE][TILE];
    BLOCKV g[TILE][TILE], dm[TILE][TILE];
    FN(square)(job->mat, m, 1, A);        /* A g A^T = L g R^T with L = R = A */
    for (long o0 = job->c0; o0 < job->c1; o0 += SUMS) {   /* SUMS channels at a time */
        const long o1 = o0 + SUMS < job->c1 ? o0 + SUMS : job->c1;
        double sums[SUMS] = {0};   /* each channel's sum of g */
        for (long t0 = 0; t0 < tiles; t0 += BLOCK)
            for (long o = o0; o < o1; o++) {   /* channels inner: g is read in order */
                const long count = tiles - t0 < BLOCK ? tiles - t0 : BLOCK;
                FN(tile_place) at = FN(tile_at)(t0, TH, TW);
                for (long k = 0; k < BLOCK; k++, FN(next_tile)(&at, TH, TW)) {
                    /* lanes past the last tile get zeros: a tile with no rows */
                    const long rows = k < count ? (OH - at.ty * m < m ? OH - at.ty * m : m) : 0,
                               cols = OW - at.tx * m < m ? OW - at.tx * m : m,
                               first = k < count ? ((at.n * O + o) * OH + at.ty * m) * OW + at.tx * m : 0;
                    const T *go = job->from + first, *mask = job->mask ? job->mask + first : NULL;
                    if (rows == m && cols == m) {   /* the usual tile: no edge to test for */
                        if (mask)
                            for (long i = 0; i < m; i++)
                                for (long j = 0; j < m; j++)
                                    g[i][j][k] = mask[i * OW + j] <= 0 ? 0 : go[i * OW + j];
                        else
                            for (long i = 0; i < m; i++)
                                for (long j = 0; j < m; j++) g[i][j][k] = go[i * OW + j];
                        continue;
                    }
                    for (long i = 0; i < m; i++)
                        for (long j = 0; j < m; j++)
                            g[i][j][k] = i < rows && j < cols && !(mask && mask[i * OW + j] <= 0)
                                         ? go[i * OW + j] : 0;
                }
                /* the bias gradient: the block's sums lane by lane (a scalar running sum is one long
                 * chain of dependent additions, the slowest part of this loop), then in double */
                BLOCKV block = {0};
                for (long i = 0; i < m; i++)
                    for (long j = 0; j < m; j++) block += g[i][j];
                for (long k = 0; k < BLOCK; k++) sums[o - o0] += block[k];
                FN(sandwich)(A, g, A, TILE, TILE, m, dm);
                FN(store_planes)(dm, job->to + o * tiles + t0, plane, count);
            }
        if (job->sums)
            for (long o = o0; o < o1; o++)
                job->sums[o] = (T)((job->add_sums ? job->sums[o] : 0) + sums[o - o0]);
    }
}

/* The entry points, as kernels.h declares them (kernels.c picks the flavour): each splits the
 * channels between the pool's threads. */
static void FN(winograd_input)(const struct tge_window *w, const T *BT, long m, const T *x, T *V,
                               int nthreads)
{
    FN(run_tile_jobs)(FN(winograd_input_channels), w, BT, m, x, V, NULL, 0, NULL, NULL, 0, nthreads);
}

static void FN(winograd_input_backward)(const struct tge_window *w, const T *BT, long m,
                                        const T *dV, T *dx, int nthreads)
{
    FN(run_tile_jobs)(FN(winograd_input_backward_channels), w, BT, m, dV, dx, NULL, 0, NULL, NULL, 0,
                      nthreads);
}

static void FN(winograd_output)(const struct tge_window *w, const T *AT, long m, const T *M,
                                const T *bias, int relu, T *y, int nthreads)
{
    FN(run_tile_jobs)(FN(winograd_output_channels), w, AT, m, M, y, bias, relu, NULL, NULL, 0,
                      nthreads);
}

static void FN(winograd_output_backward)(const struct tge_window *w, const T *AT, long m,
                                         const T *g, const T *relu_y, T *dM, T *sums, int add_sums,
                                         int nthreads)
{
    FN(run_tile_jobs)(FN(winograd_output_backward_channels), w, AT, m, g, dM, NULL, 0, relu_y, sums,
                      add_sums, nthreads);
}

#undef BLOCKV
#undef BLOCK
#undef TILE
#undef SUMS
#undef CAT_
#undef CAT
#undef FN
