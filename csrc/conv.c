/* tinygrad_edu C kernels: the data movement of convolution (im2col, col2im) and max pooling,
 * for float and double. The arithmetic of a convolution is a GEMM (kernels.c): see
 * tinygrad_edu/fast.py's Conv2d for how the two fit together.
 */
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "pool.h"

#define T float
#define SUF f32
#include "conv_impl.h"
#undef T
#undef SUF
#define T double
#define SUF f64
#include "conv_impl.h"
#undef T
#undef SUF

void tge_sim2col(const struct tge_window *w, const float *x, float *cols, int nthreads)
{
    im2col_f32(w, x, cols, nthreads);
}
void tge_dim2col(const struct tge_window *w, const double *x, double *cols, int nthreads)
{
    im2col_f64(w, x, cols, nthreads);
}
void tge_scol2im(const struct tge_window *w, const float *cols, float *dx, int nthreads)
{
    col2im_f32(w, cols, dx, nthreads);
}
void tge_dcol2im(const struct tge_window *w, const double *cols, double *dx, int nthreads)
{
    col2im_f64(w, cols, dx, nthreads);
}
void tge_smax_pool(const struct tge_window *w, const float *x, float *y, int64_t *argmax, int nthreads)
{
    max_pool_f32(w, x, y, argmax, nthreads);
}
void tge_dmax_pool(const struct tge_window *w, const double *x, double *y, int64_t *argmax,
                   int nthreads)
{
    max_pool_f64(w, x, y, argmax, nthreads);
}
long tge_smax_pool_backward(const struct tge_window *w, const float *g, const int64_t *argmax,
                            float *dx)
{
    return max_pool_backward_f32(w, g, argmax, dx);
}
long tge_dmax_pool_backward(const struct tge_window *w, const double *g, const int64_t *argmax,
                            double *dx)
{
    return max_pool_backward_f64(w, g, argmax, dx);
}
void tge_sbatch_major(long O, long N, long P, const float *rows, const float *bias, int relu,
                      float *y, int nthreads)
{
    swap_leading_axes_f32(batch_major_channels_f32, O, N, P, rows, y, bias, relu, NULL, NULL,
                          nthreads);
}
void tge_dbatch_major(long O, long N, long P, const double *rows, const double *bias, int relu,
                      double *y, int nthreads)
{
    swap_leading_axes_f64(batch_major_channels_f64, O, N, P, rows, y, bias, relu, NULL, NULL,
                          nthreads);
}
void tge_schannel_major(long N, long O, long P, const float *g, const float *relu_y, float *rows,
                        float *sums, int nthreads)
{
    swap_leading_axes_f32(channel_major_channels_f32, O, N, P, g, rows, NULL, 0, relu_y, sums,
                          nthreads);
}
void tge_dchannel_major(long N, long O, long P, const double *g, const double *relu_y, double *rows,
                        double *sums, int nthreads)
{
    swap_leading_axes_f64(channel_major_channels_f64, O, N, P, g, rows, NULL, 0, relu_y, sums,
                          nthreads);
}
