/* tinygrad_edu C kernels: the public interface (also read by build_ext.py for cffi, which takes
 * no #include: a C file includes <stdint.h> before this one, for int64_t).
 *
 * Matrices are row-major with a leading dimension (the distance in elements between rows),
 * as in BLAS. The Python side (tinygrad_edu/backend/__init__.py and c_kernels.py) checks
 * shapes, dtypes, strides and aliasing before every call, so these functions trust their arguments.
 */

/* C = alpha * op(A) op(B) + beta * C + bias, op(X) = X or X^T. op(A) is M x K, op(B) is K x N;
 * bias (N values, added to every row: nn.Linear's b) may be NULL. beta == 0 means C is not
 * read (NaN in the old C does not leak). nthreads <= 1: one thread.
 * Returns 0, or -1 when scratch memory could not be allocated. */
int tge_sgemm(int trans_a, int trans_b, long M, long N, long K, float alpha,
               const float *A, long lda, const float *B, long ldb, float beta,
               float *C, long ldc, const float *bias, int nthreads);
int tge_dgemm(int trans_a, int trans_b, long M, long N, long K, double alpha,
               const double *A, long lda, const double *B, long ldb, double beta,
               double *C, long ldc, const double *bias, int nthreads);

/* nn.Linear's backward: for dL/dy G (N x OUT), input X (N x IN) and weight W (OUT x IN), all
 * row-major, DX = G W (N x IN), DW = G^T X (OUT x IN) and DB = sum over rows of G (OUT), each
 * written whole (NULL: not wanted). With WS (not NULL, laid out as W: tinygrad_edu.jit passes W
 * itself) SGD's step WS += step * DW is taken too, each block of DW while it is in cache, after DX
 * has read W; the numbers are those of DW then tge_saxpy_many. Returns 0, or -1 when scratch
 * memory could not be allocated. */
int tge_slinear_backward(long N, long IN, long OUT, const float *G, long ldg, const float *X,
                         long ldx, const float *W, long ldw, float *DX, float *DW, float *DB,
                         float *WS, float step, int nthreads);
int tge_dlinear_backward(long N, long IN, long OUT, const double *G, long ldg, const double *X,
                         long ldx, const double *W, long ldw, double *DX, double *DW, double *DB,
                         double *WS, double step, int nthreads);

/* Rank-1 update A += alpha * x y^T, A is M x N. */
void tge_sger(long M, long N, float alpha, const float *x, const float *y, float *A, long lda);
void tge_dger(long M, long N, double alpha, const double *x, const double *y, double *A, long lda);

/* For i < count: Y[i] += alpha * X[i] over n[i] elements: one call updates every parameter,
 * split between up to nthreads threads. */
void tge_saxpy_many(long count, float alpha, const long *n, const float *const *X, float *const *Y,
                    int nthreads);
void tge_daxpy_many(long count, double alpha, const long *n, const double *const *X,
                    double *const *Y, int nthreads);
/* For i < count: Y[i] := alpha * X[i] + beta * Y[i] (SGD's momentum buffers: alpha = 1 - dampening,
 * beta = momentum), split between threads as tge_saxpy_many; with beta == 1 it is that call. */
void tge_saxpby_many(long count, float alpha, float beta, const long *n, const float *const *X,
                     float *const *Y, int nthreads);
void tge_daxpby_many(long count, double alpha, double beta, const long *n, const double *const *X,
                     double *const *Y, int nthreads);

/* ReLU over n contiguous elements: Y = max(Z, 0) (NaN stays NaN), and its gradient as in
 * PyTorch: DZ = 0 where Y <= 0 (even if G is inf or NaN there), else G. NumPy's maximum with a scalar is not vectorised (0.3 ns per
 * element here, against 0.05 for these loops). */
void tge_srelu(long n, const float *Z, float *Y);
void tge_drelu(long n, const double *Z, double *Y);
void tge_srelu_backward(long n, const float *Y, const float *G, float *DZ);
void tge_drelu_backward(long n, const double *Y, const double *G, double *DZ);

/* Softmax cross-entropy row by row, for N rows of C logits Z and N labels y: the losses
 * L[i] = -log softmax(Z[i])[y[i]] and their gradients D[i] = softmax(Z[i]) - onehot(y[i]).
 * Returns -1, or the first row whose label is outside 0..C-1. */
long tge_scross_entropy(long N, long C, const float *Z, const int64_t *y, float *D, float *L);
long tge_dcross_entropy(long N, long C, const double *Z, const int64_t *y, double *D, double *L);

/* A batch's loss from the n per-sample losses x: out[0] = (x[0] + ... + x[n-1]) / divisor
 * (divisor 1: their sum; n: their mean), summed in double. */
void tge_stotal(long n, const float *x, double divisor, float *out);
void tge_dtotal(long n, const double *x, double divisor, double *out);

/* Each row of X (rows x cols, row-major) times its own factor: D[r] = X[r] * (g[r * g_step] /
 * divisor), the factor computed in the element type. Cross-entropy's backward: g is dL/dL_n (one
 * per row, g_step 1) or dL/dL (one for all, g_step 0), divisor N for the mean. */
void tge_sscale_rows(long rows, long cols, const float *X, const float *g, long g_step,
                     double divisor, float *D);
void tge_dscale_rows(long rows, long cols, const double *X, const double *g, long g_step,
                     double divisor, double *D);

/* Windows for convolution and pooling over N images of C planes, H x W each: a kernel of
 * kh x kw elements, dh and dw apart (dilation), moved sh and sw at a time (stride), starting pt
 * rows above and pl columns left of the plane (the padding, read as zero or never chosen);
 * the output planes are OH x OW. */
struct tge_window {
    long N, C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW;
};

/* im2col: the windows of x (N, C, H, W) as a matrix, one row per kernel element (c, p, q) and
 * one column per output pixel (n, i, j):
 *   cols[(c kh + p) kw + q][(n OH + i) OW + j] = x[n][c][i sh + p dh - pt][j sw + q dw - pl]
 * (0 in the padding). A convolution is then one product, weight (O, C kh kw) @ cols.
 * col2im is its adjoint (the input's gradient from the columns' one): dx (N, C, H, W) is
 * overwritten with each entry of cols added onto the pixel it was read from. */
void tge_sim2col(const struct tge_window *w, const float *x, float *cols, int nthreads);
void tge_dim2col(const struct tge_window *w, const double *x, double *cols, int nthreads);
void tge_scol2im(const struct tge_window *w, const float *cols, float *dx, int nthreads);
void tge_dcol2im(const struct tge_window *w, const double *cols, double *dx, int nthreads);

/* Max pooling: y (N, C, OH, OW) holds each window's largest element and argmax where it is in
 * its plane (row * W + column; the first of equal ones, the first NaN over any number; never the
 * padding). The backward overwrites dx (N, C, H, W) with each g added at its argmax, and returns
 * how many argmax positions lay outside their plane (those are skipped). */
void tge_smax_pool(const struct tge_window *w, const float *x, float *y, int64_t *argmax, int nthreads);
void tge_dmax_pool(const struct tge_window *w, const double *x, double *y, int64_t *argmax,
                   int nthreads);
long tge_smax_pool_backward(const struct tge_window *w, const float *g, const int64_t *argmax,
                            float *dx);
long tge_dmax_pool_backward(const struct tge_window *w, const double *g, const int64_t *argmax,
                            double *dx);

/* A convolution's output between the GEMM's layout and PyTorch's: batch_major writes
 * y[n][o][i] = rows[o][n][i] + bias[o] (bias may be NULL) for O channels, N images and P pixels a
 * plane, and with relu != 0 the ReLU of that (as relu writes it); channel_major is its adjoint,
 * rows[o][n][i] = g[n][o][i], and sums[o] the sum of channel o over all images and pixels (the
 * bias gradient; NULL: not wanted). With relu_y (a ReLU's output, laid out as g), g is first
 * masked as relu_backward masks it. tinygrad_edu.jit fuses a ReLU into these two calls. */
void tge_sbatch_major(long O, long N, long P, const float *rows, const float *bias, int relu,
                      float *y, int nthreads);
void tge_dbatch_major(long O, long N, long P, const double *rows, const double *bias, int relu,
                      double *y, int nthreads);
void tge_schannel_major(long N, long O, long P, const float *g, const float *relu_y, float *rows,
                        float *sums, int nthreads);
void tge_dchannel_major(long N, long O, long P, const double *g, const double *relu_y,
                        double *rows, double *sums, int nthreads);

/* Winograd's minimal filtering on 8 x 8 tiles, m x m outputs each (tinygrad_edu/fast.py's
 * WinogradConv2d). The tiles' array holds, for each of 64 transformed positions (a, b), a row per
 * channel of one number per tile (n, ty, tx), tile (ty, tx) of the TH x TW = ceil(OH / m) x
 * ceil(OW / m) covering an image's outputs:
 *   input:           V[8a + b][c][(n TH + ty) TW + tx] = (BT d BT^T)[a][b], d the 8 x 8 pixels of
 *                    x[n][c] from row ty m - pt, column tx m - pl (0 outside the plane);
 *   input_backward:  dx (overwritten) = the sum of each tile's BT^T dV BT, added where it was read;
 *   output:          y[n][o][ty m + i][tx m + j] = (AT M AT^T)[i][j] + bias[o] (bias may be NULL;
 *                    relu != 0: then the ReLU), inside the OH x OW plane;
 *   output_backward: dM[8a + b][o][tile] = (AT^T g AT)[a][b], g the tile's m x m gradients (0
 *                    outside the plane, and where relu_y <= 0 if relu_y is given), and sums[o]
 *                    each channel's sum of g (NULL: not wanted; add_sums != 0: added to sums).
 * The input side takes the convolution's window (stride and dilation 1, kh = kw = 9 - m); the
 * output side a window whose N, C, OH, OW are the output's N, O, OH, OW. BT is 8 x 8, AT m x 8. */
void tge_swinograd_input(const struct tge_window *w, const float *BT, long m, const float *x,
                         float *V, int nthreads);
void tge_dwinograd_input(const struct tge_window *w, const double *BT, long m, const double *x,
                         double *V, int nthreads);
void tge_swinograd_input_backward(const struct tge_window *w, const float *BT, long m,
                                  const float *dV, float *dx, int nthreads);
void tge_dwinograd_input_backward(const struct tge_window *w, const double *BT, long m,
                                  const double *dV, double *dx, int nthreads);
void tge_swinograd_output(const struct tge_window *w, const float *AT, long m, const float *M,
                          const float *bias, int relu, float *y, int nthreads);
void tge_dwinograd_output(const struct tge_window *w, const double *AT, long m, const double *M,
                          const double *bias, int relu, double *y, int nthreads);
void tge_swinograd_output_backward(const struct tge_window *w, const float *AT, long m,
                                   const float *g, const float *relu_y, float *dM, float *sums,
                                   int add_sums, int nthreads);
void tge_dwinograd_output_backward(const struct tge_window *w, const double *AT, long m,
                                   const double *g, const double *relu_y, double *dM, double *sums,
                                   int add_sums, int nthreads);

/* Which instruction set the kernels use: 3 = AVX-512, 2 = AVX2+FMA, 1 = SSE2 (x86-64 baseline),
 * 0 = portable C. tge_set_isa forces a lower one (for tests); it returns the ISA now in use. */
int tge_isa(void);
int tge_set_isa(int isa);

/* Let the process keep the memory it frees (glibc's malloc; elsewhere it does nothing and returns
 * 0): blocks under mmap_threshold bytes come from the heap, and freed heap memory goes back to the
 * system only past trim_threshold bytes. Returns 1 when both were set. See docs/kernels.md. */
int tge_keep_freed_memory(int mmap_threshold, int trim_threshold);

/* A recorded program (tinygrad_edu.jit): a table of kernel calls, each naming its kernel and
 * holding its arguments in order (pointers in .p, integers in .i, floats and doubles in .d), run
 * one after the other by tge_run_program, with no Python between them. */
enum tge_kernel {
    TGE_SGEMM, TGE_DGEMM, TGE_SLINEAR_BACKWARD, TGE_DLINEAR_BACKWARD, TGE_SGER, TGE_DGER,
    TGE_SAXPY_MANY, TGE_DAXPY_MANY, TGE_SRELU, TGE_DRELU, TGE_SRELU_BACKWARD, TGE_DRELU_BACKWARD,
    TGE_SCROSS_ENTROPY, TGE_DCROSS_ENTROPY, TGE_SIM2COL, TGE_DIM2COL, TGE_SCOL2IM, TGE_DCOL2IM,
    TGE_SMAX_POOL, TGE_DMAX_POOL, TGE_SMAX_POOL_BACKWARD, TGE_DMAX_POOL_BACKWARD,
    TGE_STOTAL, TGE_DTOTAL, TGE_SSCALE_ROWS, TGE_DSCALE_ROWS, TGE_SBATCH_MAJOR, TGE_DBATCH_MAJOR,
    TGE_SCHANNEL_MAJOR, TGE_DCHANNEL_MAJOR, TGE_SAXPBY_MANY, TGE_DAXPBY_MANY,
    TGE_SWINOGRAD_INPUT, TGE_DWINOGRAD_INPUT, TGE_SWINOGRAD_INPUT_BACKWARD,
    TGE_DWINOGRAD_INPUT_BACKWARD, TGE_SWINOGRAD_OUTPUT, TGE_DWINOGRAD_OUTPUT,
    TGE_SWINOGRAD_OUTPUT_BACKWARD, TGE_DWINOGRAD_OUTPUT_BACKWARD
};
union tge_arg {
    void *p;
    long i;
    double d;
};
struct tge_call {
    int kernel;
    union tge_arg arg[15];   /* the most any kernel takes: tge_sgemm's 15 */
};

/* Run calls[0], ..., calls[n-1] in order. Returns n when all succeeded; otherwise the index of
 * the call that failed (the rest are not run), with *status set to what it returned: -1 for a
 * product out of scratch memory, or for cross-entropy the first row whose label is out of range. */
long tge_run_program(const struct tge_call *calls, long n, long *status);
