/* The kernels against plain loops, in C alone: for CPUs where Python's tests cannot run the build,
 * such as an aarch64 one emulated by qemu-user (.ci/run cross-compiles this file for it), and
 * natively once per instruction set the CPU has.
 *
 *     gcc -O2 -std=gnu11 -Icsrc csrc/kernel_check.c csrc/kernels.c csrc/conv.c csrc/pool.c \
 *         csrc/program.c -o kernel_check -lpthread -lm && ./kernel_check
 *
 * Each check prints one line; the exit status is the number of checks that failed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>  /* kernels.h names int64_t and cannot include it: cffi reads that file */
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"

static int failures;

static void report(const char *what, double error, double tolerance)
{
    int ok = error <= tolerance; /* false for NaN too */
    printf("%-4s %-58s max error %.2e\n", ok ? "ok" : "FAIL", what, error);
    failures += !ok;
}

static unsigned long long state = 42;
static double uniform(void) /* in [-1, 1): a small generator of our own, the same everywhere */
{
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / (double)(1ULL << 52) - 1.0;
}

static float *floats(long n)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (long i = 0; i < n; i++) x[i] = (float)uniform();
    return x;
}

/* op(X)[i][j] for a row-major X with leading dimension ld */
static double at(const float *X, long ld, int trans, long i, long j)
{
    return trans ? X[j * ld + i] : X[i * ld + j];
}

static void check_gemm(long M, long N, long K, int ta, int tb, int with_bias, float beta, int threads)
{
    long lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; /* rows spaced out */
    float *A = floats((ta ? K : M) * lda), *B = floats((tb ? N : K) * ldb), *C = floats(M * ldc);
    float *bias = with_bias ? floats(N) : NULL, *C0 = malloc(sizeof(float) * M * ldc);
    for (long i = 0; i < M * ldc; i++) C0[i] = C[i];
    tge_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C, ldc, bias, threads);
    double error = 0;
    for (long i = 0; i < M; i++)
        for (long j = 0; j < N; j++) {
            double want = (beta != 0 ? beta * C0[i * ldc + j] : 0) + (bias ? bias[j] : 0);
            for (long k = 0; k < K; k++) want += 0.5 * at(A, lda, ta, i, k) * at(B, ldb, tb, k, j);
            error = fmax(error, fabs(C[i * ldc + j] - want));
        }
    char what[96];
    snprintf(what, sizeof what, "sgemm %ldx%ld @ %ldx%ld%s%s%s beta %g, %d thread(s)", M, K, K, N,
             ta ? " A^T" : "", tb ? " B^T" : "", with_bias ? " + bias" : "", beta, threads);
    report(what, error, 1e-4 * (K + 1));
    free(A), free(B), free(C), free(C0), free(bias);
}

/* x @ W.T (the dot-product kernel) with W's rows a whole number of 64-byte lines apart and W
 * starting at every float of a line: its vector loop starts at W's first vector boundary, with
 * a masked vector before and after. The worst error over all starts. */
static void check_gemm_dot_alignment(long M, long N, long K)
{
    long ldb = (K + 16) / 16 * 16;
    float *A = floats(M * K), *memory = floats(N * ldb + 16), *C = malloc(sizeof(float) * M * N);
    double error = 0;
    for (int offset = 0; offset < 16; offset++) {
        const float *B = memory + offset;
        tge_sgemm(0, 1, M, N, K, 1.0f, A, K, B, ldb, 0.0f, C, N, NULL, 1);
        for (long i = 0; i < M; i++)
            for (long j = 0; j < N; j++) {
                double want = 0;
                for (long k = 0; k < K; k++) want += (double)A[i * K + k] * B[j * ldb + k];
                error = fmax(error, fabs(C[i * N + j] - want));
            }
    }
    char what[96];
    snprintf(what, sizeof what, "sgemm %ldx%ld @ (%ldx%ld)^T, B at every float of a line", M, K, N, K);
    report(what, error, 1e-4 * (K + 1));
    free(A), free(memory), free(C);
}

static void check_linear_backward(long n, long in, long out)
{
    float *G = floats(n * out), *X = floats(n * in), *W = floats(out * in);
    float *DX = malloc(sizeof(float) * n * in), *DW = malloc(sizeof(float) * out * in);
    float *DB = malloc(sizeof(float) * out);
    tge_slinear_backward(n, in, out, G, out, X, in, W, in, DX, DW, DB, NULL, 0, 2);
    double error = 0;
    for (long i = 0; i < n; i++)
        for (long j = 0; j < in; j++) {
            double want = 0;
            for (long o = 0; o < out; o++) want += (double)G[i * out + o] * W[o * in + j];
            error = fmax(error, fabs(DX[i * in + j] - want));
        }
    for (long o = 0; o < out; o++) {
        double db = 0;
        for (long i = 0; i < n; i++) db += G[i * out + o];
        error = fmax(error, fabs(DB[o] - db));
        for (long j = 0; j < in; j++) {
            double want = 0;
            for (long i = 0; i < n; i++) want += (double)G[i * out + o] * X[i * in + j];
            error = fmax(error, fabs(DW[o * in + j] - want));
        }
    }
    /* the fused SGD step: the same DX (from W before the step) and DW, and W stepped bit for bit
     * as tge_saxpy_many steps it */
    float *WS = malloc(sizeof(float) * out * in), *WA = malloc(sizeof(float) * out * in);
    float *DX2 = malloc(sizeof(float) * n * in), *DW2 = malloc(sizeof(float) * out * in);
    for (long i = 0; i < out * in; i++) WS[i] = WA[i] = W[i];
    tge_slinear_backward(n, in, out, G, out, X, in, WS, in, DX2, DW2, NULL, WS, -0.1f, 2);
    long size = out * in;
    const float *dws[1] = {DW};
    float *was[1] = {WA};
    tge_saxpy_many(1, -0.1f, &size, dws, was, 1);
    for (long i = 0; i < n * in; i++) error += DX2[i] != DX[i];
    for (long i = 0; i < out * in; i++) error += (DW2[i] != DW[i]) + (WS[i] != WA[i]);
    char what[96];
    snprintf(what, sizeof what, "slinear_backward batch %ld, %ld -> %ld, and with the SGD step", n, in, out);
    report(what, error, 1e-4 * (n + out));
    free(G), free(X), free(W), free(DX), free(DW), free(DB), free(WS), free(WA), free(DX2), free(DW2);
}

static void check_elementwise(void)
{
    enum { n = 37 };
    float z[n], y[n], g[n], dz[n];
    for (int i = 0; i < n; i++) z[i] = (float)uniform(), g[i] = (float)uniform();
    z[3] = NAN, g[5] = INFINITY, z[5] = -1; /* NaN stays NaN; inf where the ReLU is off gives 0 */
    tge_srelu(n, z, y);
    tge_srelu_backward(n, y, g, dz);
    double error = 0;
    for (int i = 0; i < n; i++) {
        if (i == 3) {
            error += !isnan(y[i]) + (dz[i] != g[i]);
            continue;
        }
        error = fmax(error, fabs(y[i] - (z[i] > 0 ? z[i] : 0)));
        error = fmax(error, fabs(dz[i] - (y[i] > 0 ? g[i] : 0)));
    }
    report("srelu and srelu_backward (NaN, inf where off)", error, 0);

    float mean;
    tge_stotal(n - 4, z + 4, n - 4, &mean); /* past the NaN */
    double sum = 0;
    for (int i = 4; i < n; i++) sum += z[i];
    report("stotal: the mean of 33", fabs(mean - sum / (n - 4)), 1e-6);
}

/* axpby_many over two arrays of different lengths, in 1 and 3 threads, against the formula;
 * beta = 1 must give axpy_many's numbers bit for bit. */
static void check_axpby_many(int threads)
{
    long n[2] = {37, 1000};
    float *X[2] = {floats(n[0]), floats(n[1])}, *Y[2] = {floats(n[0]), floats(n[1])};
    float *Y0[2] = {floats(n[0]), floats(n[1])}, *Z[2] = {floats(n[0]), floats(n[1])};
    for (int a = 0; a < 2; a++)
        for (long i = 0; i < n[a]; i++) Y0[a][i] = Z[a][i] = Y[a][i];
    tge_saxpby_many(2, 0.9f, 0.7f, n, (const float *const *)X, Y, threads);
    double error = 0;
    for (int a = 0; a < 2; a++)
        for (long i = 0; i < n[a]; i++) error = fmax(error, fabs(Y[a][i] - (0.9 * X[a][i] + 0.7 * Y0[a][i])));
    tge_saxpby_many(2, 0.9f, 1.0f, n, (const float *const *)X, Y0, threads);
    tge_saxpy_many(2, 0.9f, n, (const float *const *)X, Z, threads);
    for (int a = 0; a < 2; a++)
        for (long i = 0; i < n[a]; i++) error += Y0[a][i] != Z[a][i];
    char what[96];
    snprintf(what, sizeof what, "saxpby_many, and with beta 1 axpy_many, %d thread(s)", threads);
    report(what, error, 1e-6);
    for (int a = 0; a < 2; a++) free(X[a]), free(Y[a]), free(Y0[a]), free(Z[a]);
}

static void check_cross_entropy(long N, long C)
{
    float *Z = floats(N * C), *D = malloc(sizeof(float) * N * C), *L = malloc(sizeof(float) * N);
    float *S = malloc(sizeof(float) * N * C), one = 2.0f;
    int64_t *y = malloc(sizeof(int64_t) * N);
    for (long i = 0; i < N; i++) y[i] = (i * 7) % C;
    long bad = tge_scross_entropy(N, C, Z, y, D, L);
    double error = bad == -1 ? 0 : 1;
    for (long i = 0; i < N; i++) {
        double top = -INFINITY, sum = 0;
        for (long c = 0; c < C; c++) top = fmax(top, Z[i * C + c]);
        for (long c = 0; c < C; c++) sum += exp(Z[i * C + c] - top);
        error = fmax(error, fabs(L[i] - (log(sum) + top - Z[i * C + y[i]])));
        for (long c = 0; c < C; c++)
            error = fmax(error, fabs(D[i * C + c] - (exp(Z[i * C + c] - top) / sum - (c == y[i]))));
    }
    tge_sscale_rows(N, C, D, &one, 0, N, S);
    for (long i = 0; i < N * C; i++) error = fmax(error, fabs(S[i] - D[i] * (one / N)));
    y[N - 1] = C; /* out of range: reported, by row */
    error += tge_scross_entropy(N, C, Z, y, D, L) != N - 1;
    char what[96];
    snprintf(what, sizeof what, "scross_entropy %ldx%ld, scale_rows, a bad label", N, C);
    report(what, error, 1e-5);
    free(Z), free(D), free(L), free(S), free(y);
}

/* A convolution's output: (O, N, P) -> (N, O, P) + bias (then the ReLU, with relu), and back with
 * each channel's sum (the gradient first masked where the ReLU's output is <= 0, with relu); the
 * gradient is rows read as (N, O, P): any numbers will do. */
static void check_layouts(int relu)
{
    long O = 5, N = 3, P = 19;
    float *rows = floats(O * N * P), *bias = floats(O), *y = malloc(sizeof(float) * O * N * P);
    float *back = malloc(sizeof(float) * O * N * P), *sums = malloc(sizeof(float) * O);
    tge_sbatch_major(O, N, P, rows, bias, relu, y, 2);
    tge_schannel_major(N, O, P, rows, relu ? y : NULL, back, sums, 2);
    double error = 0;
    for (long o = 0; o < O; o++) {
        double sum = 0;
        for (long n = 0; n < N; n++)
            for (long i = 0; i < P; i++) {
                float z = rows[(o * N + n) * P + i] + bias[o], want_y = relu && z < 0 ? 0 : z;
                float g = rows[(n * O + o) * P + i], want_back = relu && want_y <= 0 ? 0 : g;
                error = fmax(error, fabs(y[(n * O + o) * P + i] - want_y));
                error = fmax(error, fabs(back[(o * N + n) * P + i] - want_back));
                sum += want_back;
            }
        error = fmax(error, fabs(sums[o] - sum) / (1 + fabs(sum)));
    }
    report(relu ? "sbatch_major then ReLU, schannel_major after relu_backward"
                : "sbatch_major with a bias and schannel_major with sums", error, 1e-5);
    free(rows), free(bias), free(y), free(back), free(sums);
}

static void check_windows(void)
{
    struct tge_window w = {2, 3, 7, 6, 3, 2, 2, 1, 1, 2, 1, 1, 0, 0}; /* N C H W kh kw sh sw dh dw pt pl */
    w.OH = (w.H + 2 * w.pt - w.dh * (w.kh - 1) - 1) / w.sh + 1;
    w.OW = (w.W + 2 * w.pl - w.dw * (w.kw - 1) - 1) / w.sw + 1;
    long n_x = w.N * w.C * w.H * w.W, n_cols = w.C * w.kh * w.kw * w.N * w.OH * w.OW;
    float *x = floats(n_x), *cols = malloc(sizeof(float) * n_cols), *dx = malloc(sizeof(float) * n_x);
    float *g = floats(n_cols);
    tge_sim2col(&w, x, cols, 2);
    tge_scol2im(&w, g, dx, 2);
    double error = 0, dot_cols = 0, dot_x = 0; /* col2im is im2col's adjoint: <im2col x, g> = <x, col2im g> */
    for (long c = 0; c < w.C; c++)
        for (long p = 0; p < w.kh; p++)
            for (long q = 0; q < w.kw; q++)
                for (long n = 0; n < w.N; n++)
                    for (long i = 0; i < w.OH; i++)
                        for (long j = 0; j < w.OW; j++) {
                            long r = i * w.sh + p * w.dh - w.pt, s = j * w.sw + q * w.dw - w.pl;
                            long at_col = (((c * w.kh + p) * w.kw + q) * w.N + n) * w.OH * w.OW + i * w.OW + j;
                            int inside = r >= 0 && r < w.H && s >= 0 && s < w.W;
                            double want = inside ? x[((n * w.C + c) * w.H + r) * w.W + s] : 0;
                            error = fmax(error, fabs(cols[at_col] - want));
                            dot_cols += (double)cols[at_col] * g[at_col];
                        }
    for (long i = 0; i < n_x; i++) dot_x += (double)x[i] * dx[i];
    error = fmax(error, fabs(dot_cols - dot_x) / (1 + fabs(dot_x)));
    report("sim2col (stride, dilation, padding) and scol2im its adjoint", error, 1e-5);

    struct tge_window p = {2, 3, 7, 6, 2, 2, 2, 2, 1, 1, 0, 0, 3, 3};
    long n_y = p.N * p.C * p.OH * p.OW;
    float *y = malloc(sizeof(float) * n_y), *gy = floats(n_y), *dxp = malloc(sizeof(float) * n_x);
    int64_t *arg = malloc(sizeof(int64_t) * n_y);
    tge_smax_pool(&p, x, y, arg, 2);
    tge_smax_pool_backward(&p, gy, arg, dxp);
    error = 0;
    for (long plane = 0; plane < p.N * p.C; plane++)
        for (long i = 0; i < p.OH; i++)
            for (long j = 0; j < p.OW; j++) {
                double best = -INFINITY;
                for (long a = 0; a < 2; a++)
                    for (long b = 0; b < 2; b++) best = fmax(best, x[plane * p.H * p.W + (2 * i + a) * p.W + 2 * j + b]);
                long o = plane * p.OH * p.OW + i * p.OW + j;
                error = fmax(error, fabs(y[o] - best) + fabs(x[plane * p.H * p.W + arg[o]] - best));
            }
    double sum_g = 0, sum_dx = 0;
    for (long i = 0; i < n_y; i++) sum_g += gy[i];
    for (long i = 0; i < n_x; i++) sum_dx += dxp[i];
    error = fmax(error, fabs(sum_g - sum_dx));
    report("smax_pool 2x2 and its backward", error, 1e-5);
    free(x), free(cols), free(dx), free(g), free(y), free(gy), free(dxp), free(arg);

    check_layouts(0);
    check_layouts(1);
}

/* Winograd's F(m x m, r x r) matrices from the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity, as
 * tinygrad_edu/fast.py's winograd_matrices builds them (there in fractions): AT (m x 8),
 * G (8 x r), BT (8 x 8), row-major. */
static void winograd_matrices(int r, double *AT, double *G, double *BT)
{
    const double p[7] = {0, 1, -1, 2, -2, 0.5, -0.5};
    const int m = 9 - r;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < 8; j++) AT[i * 8 + j] = j < 7 ? pow(p[j], i) : i == m - 1;
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < r; k++) {
            double f = 1;
            for (int l = 0; l < 7 && j < 7; l++) f *= l == j ? 1 : p[j] - p[l];
            G[j * r + k] = j < 7 ? pow(p[j], k) / f : k == r - 1;
        }
    for (int j = 0; j < 8; j++) { /* the coefficients of the product of (x - p_l), l != j */
        double c[9] = {1};
        int degree = 0;
        for (int l = 0; l < 7; l++) {
            if (l == j) continue;
            for (int d = ++degree; d >= 0; d--) c[d] = (d ? c[d - 1] : 0) - p[l] * c[d];
        }
        for (int d = 0; d < 8; d++) BT[j * 8 + d] = d <= degree ? c[d] : 0;
    }
}

/* A convolution through the four tile kernels, the products between them in loops here, against
 * the direct convolution and its gradients: padding, partial tiles, a fused ReLU's mask, sums. */
static void check_winograd(int r, int threads)
{
    const int m = 9 - r;
    struct tge_window w = {2, 3, 11, 9, r, r, 1, 1, 1, 1, 1, 2, 0, 0}; /* pt 1 (and pb 0), pl 2 (pr 1) */
    const long O = 4, pb = 0, pr = 1;
    w.OH = w.H + w.pt + pb - r + 1;
    w.OW = w.W + w.pl + pr - r + 1;
    const long TH = (w.OH + m - 1) / m, TW = (w.OW + m - 1) / m, T = w.N * TH * TW;
    double AT[7 * 8], G[8 * 7], BT[64];
    winograd_matrices(r, AT, G, BT);
    float ATf[7 * 8], BTf[64];
    for (int i = 0; i < m * 8; i++) ATf[i] = (float)AT[i];
    for (int i = 0; i < 64; i++) BTf[i] = (float)BT[i];
    long n_x = w.N * w.C * w.H * w.W, n_y = w.N * O * w.OH * w.OW;
    float *x = floats(n_x), *g = floats(O * w.C * r * r), *bias = floats(O), *gy = floats(n_y);
    float *V = malloc(sizeof(float) * 64 * w.C * T), *M = malloc(sizeof(float) * 64 * O * T);
    float *y = malloc(sizeof(float) * n_y), *mask = floats(n_y), *dM = malloc(sizeof(float) * 64 * O * T);
    float *dV = malloc(sizeof(float) * 64 * w.C * T), *dx = malloc(sizeof(float) * n_x);
    float *sums = malloc(sizeof(float) * O);
    double *U = malloc(sizeof(double) * 64 * O * w.C);
    for (long o = 0; o < O; o++) /* U = G g G^T for each filter */
        for (long c = 0; c < w.C; c++)
            for (int a = 0; a < 8; a++)
                for (int b = 0; b < 8; b++) {
                    double u = 0;
                    for (int k = 0; k < r; k++)
                        for (int l = 0; l < r; l++) u += G[a * r + k] * g[((o * w.C + c) * r + k) * r + l] * G[b * r + l];
                    U[((a * 8 + b) * O + o) * w.C + c] = u;
                }
    tge_swinograd_input(&w, BTf, m, x, V, threads);
    for (long f = 0; f < 64; f++) /* M_f = U_f V_f */
        for (long o = 0; o < O; o++)
            for (long t = 0; t < T; t++) {
                double sum = 0;
                for (long c = 0; c < w.C; c++) sum += U[(f * O + o) * w.C + c] * V[(f * w.C + c) * T + t];
                M[(f * O + o) * T + t] = (float)sum;
            }
    struct tge_window out = {w.N, O, w.OH, w.OW, 1, 1, 1, 1, 1, 1, 0, 0, w.OH, w.OW};
    tge_swinograd_output(&out, ATf, m, M, bias, 0, y, threads);
    double error = 0;
    for (long n = 0; n < w.N; n++)
        for (long o = 0; o < O; o++)
            for (long i = 0; i < w.OH; i++)
                for (long j = 0; j < w.OW; j++) {
                    double want = bias[o];
                    for (long c = 0; c < w.C; c++)
                        for (int k = 0; k < r; k++)
                            for (int l = 0; l < r; l++) {
                                long row = i + k - w.pt, col = j + l - w.pl;
                                if (row >= 0 && row < w.H && col >= 0 && col < w.W)
                                    want += (double)x[((n * w.C + c) * w.H + row) * w.W + col] *
                                            g[((o * w.C + c) * r + k) * r + l];
                            }
                    error = fmax(error, fabs(y[((n * O + o) * w.OH + i) * w.OW + j] - want));
                }
    char what[96];
    snprintf(what, sizeof what, "swinograd_input and _output, F(%dx%d, %dx%d), %d thread(s)", m, m, r, r, threads);
    report(what, error, 1e-4);

    /* backward, with a ReLU's output as the mask (g is 0 where it is <= 0) */
    tge_swinograd_output_backward(&out, ATf, m, gy, mask, dM, sums, 0, threads);
    for (long f = 0; f < 64; f++) /* dV_f = U_f^T dM_f */
        for (long c = 0; c < w.C; c++)
            for (long t = 0; t < T; t++) {
                double sum = 0;
                for (long o = 0; o < O; o++) sum += U[(f * O + o) * w.C + c] * dM[(f * O + o) * T + t];
                dV[(f * w.C + c) * T + t] = (float)sum;
            }
    tge_swinograd_input_backward(&w, BTf, m, dV, dx, threads);
    error = 0;
    for (long i = 0; i < n_x; i++) { /* dL/dx from the masked gradient, directly */
        long col = i % w.W, row = i / w.W % w.H, c = i / (w.W * w.H) % w.C, n = i / (w.W * w.H * w.C);
        double want = 0;
        for (long o = 0; o < O; o++)
            for (int k = 0; k < r; k++)
                for (int l = 0; l < r; l++) {
                    long oi = row - k + w.pt, oj = col - l + w.pl;
                    if (oi < 0 || oi >= w.OH || oj < 0 || oj >= w.OW) continue;
                    long at_y = ((n * O + o) * w.OH + oi) * w.OW + oj;
                    want += (mask[at_y] <= 0 ? 0 : gy[at_y]) * (double)g[((o * w.C + c) * r + k) * r + l];
                }
        error = fmax(error, fabs(dx[i] - want));
    }
    for (long o = 0; o < O; o++) {
        double sum = 0;
        for (long n = 0; n < w.N; n++)
            for (long i = 0; i < w.OH * w.OW; i++) {
                long at_y = (n * O + o) * w.OH * w.OW + i;
                sum += mask[at_y] <= 0 ? 0 : gy[at_y];
            }
        error = fmax(error, fabs(sums[o] - sum));
    }
    snprintf(what, sizeof what, "swinograd_output_backward (masked) and _input_backward, r %d", r);
    report(what, error, 1e-4);
    free(x), free(g), free(bias), free(gy), free(V), free(M), free(y), free(mask), free(dM), free(dV);
    free(dx), free(sums), free(U);
}

static void check_program(void)
{
    float *A = floats(12 * 8), *B = floats(5 * 8), *C = malloc(sizeof(float) * 12 * 5), *R = malloc(sizeof(float) * 60);
    float *want = malloc(sizeof(float) * 60);
    struct tge_call calls[2] = {{TGE_SGEMM, {{0}}}, {TGE_SRELU, {{0}}}};
    long args[] = {0, 1, 12, 5, 8};
    for (int i = 0; i < 5; i++) calls[0].arg[i].i = args[i];
    calls[0].arg[5].d = 1, calls[0].arg[6].p = A, calls[0].arg[7].i = 8, calls[0].arg[8].p = B;
    calls[0].arg[9].i = 8, calls[0].arg[10].d = 0, calls[0].arg[11].p = C, calls[0].arg[12].i = 5;
    calls[0].arg[13].p = NULL, calls[0].arg[14].i = 1;
    calls[1].arg[0].i = 60, calls[1].arg[1].p = C, calls[1].arg[2].p = R;
    long status = 0;
    double error = tge_run_program(calls, 2, &status) != 2;
    tge_sgemm(0, 1, 12, 5, 8, 1, A, 8, B, 8, 0, want, 5, NULL, 1);
    for (int i = 0; i < 60; i++) error = fmax(error, fabs(R[i] - (want[i] > 0 ? want[i] : 0)));
    calls[1].kernel = -1; /* not a kernel: the run stops there and says so */
    error += tge_run_program(calls, 2, &status) != 1 || status != -2;
    report("tge_run_program: gemm then relu, and a bad entry", error, 0);
    free(A), free(B), free(C), free(R), free(want);
}

int main(void)
{
    int isas[] = {3, 2, 1, 0};
    int top = tge_isa();
    for (int k = 0; k < 4; k++) {
        if (isas[k] > top || tge_set_isa(isas[k]) != isas[k]) continue;
        printf("-- instruction set %d\n", isas[k]);
        long shapes[][3] = {{1, 1, 1}, {12, 37, 19}, {12, 512, 784}, {7, 13, 1}, {45, 33, 70}, {1, 784, 512},
                            {5, 9, 4500}, {7, 2100, 25}};   /* (M, N, K) */
        for (int s = 0; s < 8; s++)
            for (int t = 0; t < 4; t++)
                check_gemm(shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t >> 1, s % 2, s == 3 ? 1.0f : 0.0f,
                           1 + (s % 2));
        check_gemm_dot_alignment(12, 7, 784);
        check_gemm_dot_alignment(5, 3, 13);
        check_gemm_dot_alignment(1, 2, 3);
        check_linear_backward(12, 37, 10);
        check_linear_backward(1, 64, 9);       /* K = 1: the outer-product path */
        check_linear_backward(12, 784, 512);   /* the MLP's first layer: the shallow direct path */
        check_linear_backward(40, 30, 20);     /* the direct path with a deep K */
        check_linear_backward(40, 50, 70);     /* the packed path */
        check_elementwise();
        check_axpby_many(1);
        check_axpby_many(3);
        check_cross_entropy(12, 10);
        check_cross_entropy(3, 1);
        check_winograd(3, 1);
        check_winograd(5, 2);
        check_winograd(7, 1);
    }
    tge_set_isa(top);
    check_windows();
    check_program();
    printf("%d check(s) failed\n", failures);
    return failures != 0;
}
