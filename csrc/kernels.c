/* tinygrad_edu C kernels: dispatch to the best instruction set this CPU has.
 *
 * gemm_impl.h and winograd_impl.h are compiled once per (element type, instruction set); at run time
 * __builtin_cpu_supports picks AVX-512, AVX2+FMA or the SSE2 baseline, so one build runs on any
 * x86-64. On other CPUs only the portable flavour is built (GCC lowers the vectors itself).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "kernels.h"
#include "pool.h"

#define T float
#define VB 16
#define LANES 4
#define SUF f32_base
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF
#define T double
#define VB 16
#define LANES 2
#define SUF f64_base
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_FLAVOURS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define T float
#define VB 32
#define LANES 8
#define SUF f32_avx2
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF
#define T double
#define VB 32
#define LANES 4
#define SUF f64_avx2
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define T float
#define VB 64
#define LANES 16
#define SUF f32_avx512
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF
#define T double
#define VB 64
#define LANES 8
#define SUF f64_avx512
#include "gemm_impl.h"
#include "winograd_impl.h"
#undef T
#undef VB
#undef LANES
#undef SUF
#pragma GCC pop_options
#endif

enum { ISA_PORTABLE = 0, ISA_SSE2 = 1, ISA_AVX2 = 2, ISA_AVX512 = 3 };
static int isa = -1;  /* chosen on first use; a benign race: every thread computes the same */

static int detect_isa(void)
{
#ifdef HAVE_X86_FLAVOURS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
    return ISA_SSE2;
#else
    return ISA_PORTABLE;
#endif
}

int tge_isa(void)
{
    if (isa < 0) isa = detect_isa();
    return isa;
}

int tge_set_isa(int wanted)
{
    int best = detect_isa();
    isa = wanted < 0 || wanted > best ? best : wanted;
#ifdef HAVE_X86_FLAVOURS
    if (isa == ISA_PORTABLE) isa = ISA_SSE2;  /* on x86-64 the baseline flavour is SSE2 */
#endif
    return isa;
}

#ifdef HAVE_X86_FLAVOURS
#define DISPATCH(name, type, ...)                                              \
    switch (tge_isa()) {                                                       \
    case ISA_AVX512: return name##_##type##_avx512(__VA_ARGS__);               \
    case ISA_AVX2: return name##_##type##_avx2(__VA_ARGS__);                   \
    default: return name##_##type##_base(__VA_ARGS__);                         \
    }
#else
#define DISPATCH(name, type, ...) return name##_##type##_base(__VA_ARGS__);
#endif

int tge_sgemm(int ta, int tb, long M, long N, long K, float alpha, const float *A, long lda,
              const float *B, long ldb, float beta, float *C, long ldc, const float *bias,
              int nthreads)
{
    DISPATCH(gemm, f32, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, nthreads)
}

int tge_dgemm(int ta, int tb, long M, long N, long K, double alpha, const double *A, long lda,
              const double *B, long ldb, double beta, double *C, long ldc, const double *bias,
              int nthreads)
{
    DISPATCH(gemm, f64, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, nthreads)
}

int tge_slinear_backward(long N, long IN, long OUT, const float *G, long ldg, const float *X,
                         long ldx, const float *W, long ldw, float *DX, float *DW, float *DB,
                         float *WS, float step, int nthreads)
{
    DISPATCH(linear_backward, f32, N, IN, OUT, G, ldg, X, ldx, W, ldw, DX, DW, DB, WS, step, nthreads)
}

int tge_dlinear_backward(long N, long IN, long OUT, const double *G, long ldg, const double *X,
                         long ldx, const double *W, long ldw, double *DX, double *DW, double *DB,
                         double *WS, double step, int nthreads)
{
    DISPATCH(linear_backward, f64, N, IN, OUT, G, ldg, X, ldx, W, ldw, DX, DW, DB, WS, step, nthreads)
}

void tge_sger(long M, long N, float alpha, const float *x, const float *y, float *A, long lda)
{
    DISPATCH(ger, f32, M, N, alpha, x, y, A, lda)
}

void tge_dger(long M, long N, double alpha, const double *x, const double *y, double *A, long lda)
{
    DISPATCH(ger, f64, M, N, alpha, x, y, A, lda)
}

void tge_saxpy_many(long count, float alpha, const long *n, const float *const *X, float *const *Y,
                    int nthreads)
{
    DISPATCH(axpby_many, f32, count, alpha, 1, n, X, Y, nthreads)
}
void tge_daxpy_many(long count, double alpha, const long *n, const double *const *X,
                    double *const *Y, int nthreads)
{
    DISPATCH(axpby_many, f64, count, alpha, 1, n, X, Y, nthreads)
}
void tge_saxpby_many(long count, float alpha, float beta, const long *n, const float *const *X,
                     float *const *Y, int nthreads)
{
    DISPATCH(axpby_many, f32, count, alpha, beta, n, X, Y, nthreads)
}
void tge_daxpby_many(long count, double alpha, double beta, const long *n, const double *const *X,
                     double *const *Y, int nthreads)
{
    DISPATCH(axpby_many, f64, count, alpha, beta, n, X, Y, nthreads)
}
void tge_srelu(long n, const float *Z, float *Y) { DISPATCH(relu, f32, n, Z, Y) }
void tge_drelu(long n, const double *Z, double *Y) { DISPATCH(relu, f64, n, Z, Y) }
void tge_srelu_backward(long n, const float *Y, const float *G, float *DZ)
{
    DISPATCH(relu_backward, f32, n, Y, G, DZ)
}
void tge_drelu_backward(long n, const double *Y, const double *G, double *DZ)
{
    DISPATCH(relu_backward, f64, n, Y, G, DZ)
}
long tge_scross_entropy(long N, long C, const float *Z, const int64_t *y, float *D, float *L)
{
    DISPATCH(cross_entropy, f32, N, C, Z, y, D, L)
}
long tge_dcross_entropy(long N, long C, const double *Z, const int64_t *y, double *D, double *L)
{
    DISPATCH(cross_entropy, f64, N, C, Z, y, D, L)
}

void tge_swinograd_input(const struct tge_window *w, const float *BT, long m, const float *x,
                         float *V, int nthreads)
{
    DISPATCH(winograd_input, f32, w, BT, m, x, V, nthreads)
}
void tge_swinograd_input_backward(const struct tge_window *w, const float *BT, long m,
                                  const float *dV, float *dx, int nthreads)
{
    DISPATCH(winograd_input_backward, f32, w, BT, m, dV, dx, nthreads)
}
void tge_swinograd_output(const struct tge_window *w, const float *AT, long m, const float *M,
                          const float *bias, int relu, float *y, int nthreads)
{
    DISPATCH(winograd_output, f32, w, AT, m, M, bias, relu, y, nthreads)
}
void tge_swinograd_output_backward(const struct tge_window *w, const float *AT, long m,
                                   const float *g, const float *relu_y, float *dM, float *sums,
                                   int add_sums, int nthreads)
{
    DISPATCH(winograd_output_backward, f32, w, AT, m, g, relu_y, dM, sums, add_sums, nthreads)
}

void tge_dwinograd_input(const struct tge_window *w, const double *BT, long m, const double *x,
                         double *V, int nthreads)
{
    DISPATCH(winograd_input, f64, w, BT, m, x, V, nthreads)
}
void tge_dwinograd_input_backward(const struct tge_window *w, const double *BT, long m,
                                  const double *dV, double *dx, int nthreads)
{
    DISPATCH(winograd_input_backward, f64, w, BT, m, dV, dx, nthreads)
}
void tge_dwinograd_output(const struct tge_window *w, const double *AT, long m, const double *M,
                          const double *bias, int relu, double *y, int nthreads)
{
    DISPATCH(winograd_output, f64, w, AT, m, M, bias, relu, y, nthreads)
}
void tge_dwinograd_output_backward(const struct tge_window *w, const double *AT, long m,
                                   const double *g, const double *relu_y, double *dM, double *sums,
                                   int add_sums, int nthreads)
{
    DISPATCH(winograd_output_backward, f64, w, AT, m, g, relu_y, dM, sums, add_sums, nthreads)
}

/* A loss's reduction and the scaling of its gradient: small loops, no instruction-set flavours. */
#define TOTAL(T, NAME)                                                                            \
    void NAME(long n, const T *x, double divisor, T *out)                                        \
    {                                                                                             \
        double sum = 0.0; /* in double: the mean of a large batch's losses stays exact enough */ \
        for (long i = 0; i < n; i++)                                                              \
            sum += x[i];                                                                          \
        out[0] = (T)(sum / divisor);                                                              \
    }
TOTAL(float, tge_stotal)
TOTAL(double, tge_dtotal)

#define SCALE_ROWS(T, NAME)                                                                       \
    void NAME(long rows, long cols, const T *X, const T *g, long g_step, double divisor, T *D)   \
    {                                                                                             \
        for (long r = 0; r < rows; r++) {                                                         \
            const T s = g[r * g_step] / (T)divisor; /* as NumPy's grad / N, in T */               \
            for (long c = 0; c < cols; c++)                                                       \
                D[r * cols + c] = X[r * cols + c] * s;                                            \
        }                                                                                         \
    }
SCALE_ROWS(float, tge_sscale_rows)
SCALE_ROWS(double, tge_dscale_rows)

int tge_keep_freed_memory(int mmap_threshold, int trim_threshold)
{
#ifdef __GLIBC__
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
#else
    (void)mmap_threshold;
    (void)trim_threshold;
    return 0;
#endif
}
