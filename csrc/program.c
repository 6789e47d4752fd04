/* tge_run_program: replay a recorded program (see kernels.h), one switch per kernel call. Each
 * case passes the recorded arguments on in the kernel's own order; the table was built from the
 * calls the Python side made while capturing, so the arguments were checked then. */
#include <stdint.h>

#include "kernels.h"

long tge_run_program(const struct tge_call *calls, long n, long *status)
{
    for (long c = 0; c < n; c++) {
        const union tge_arg *a = calls[c].arg;
        long result = 0, failed = 0;
        switch ((enum tge_kernel)calls[c].kernel) {
        case TGE_SGEMM:
            result = tge_sgemm(a[0].i, a[1].i, a[2].i, a[3].i, a[4].i, (float)a[5].d, a[6].p, a[7].i,
                               a[8].p, a[9].i, (float)a[10].d, a[11].p, a[12].i, a[13].p, a[14].i);
            failed = result != 0;
            break;
        case TGE_DGEMM:
            result = tge_dgemm(a[0].i, a[1].i, a[2].i, a[3].i, a[4].i, a[5].d, a[6].p, a[7].i,
                               a[8].p, a[9].i, a[10].d, a[11].p, a[12].i, a[13].p, a[14].i);
            failed = result != 0;
            break;
        case TGE_SLINEAR_BACKWARD:
            result = tge_slinear_backward(a[0].i, a[1].i, a[2].i, a[3].p, a[4].i, a[5].p, a[6].i,
                                          a[7].p, a[8].i, a[9].p, a[10].p, a[11].p, a[12].p,
                                          (float)a[13].d, a[14].i);
            failed = result != 0;
            break;
        case TGE_DLINEAR_BACKWARD:
            result = tge_dlinear_backward(a[0].i, a[1].i, a[2].i, a[3].p, a[4].i, a[5].p, a[6].i,
                                          a[7].p, a[8].i, a[9].p, a[10].p, a[11].p, a[12].p,
                                          a[13].d, a[14].i);
            failed = result != 0;
            break;
        case TGE_SGER:
            tge_sger(a[0].i, a[1].i, (float)a[2].d, a[3].p, a[4].p, a[5].p, a[6].i);
            break;
        case TGE_DGER:
            tge_dger(a[0].i, a[1].i, a[2].d, a[3].p, a[4].p, a[5].p, a[6].i);
            break;
        case TGE_SAXPY_MANY:
            tge_saxpy_many(a[0].i, (float)a[1].d, a[2].p, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_DAXPY_MANY:
            tge_daxpy_many(a[0].i, a[1].d, a[2].p, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_SAXPBY_MANY:
            tge_saxpby_many(a[0].i, (float)a[1].d, (float)a[2].d, a[3].p, a[4].p, a[5].p, a[6].i);
            break;
        case TGE_DAXPBY_MANY:
            tge_daxpby_many(a[0].i, a[1].d, a[2].d, a[3].p, a[4].p, a[5].p, a[6].i);
            break;
        case TGE_SRELU:
            tge_srelu(a[0].i, a[1].p, a[2].p);
            break;
        case TGE_DRELU:
            tge_drelu(a[0].i, a[1].p, a[2].p);
            break;
        case TGE_SRELU_BACKWARD:
            tge_srelu_backward(a[0].i, a[1].p, a[2].p, a[3].p);
            break;
        case TGE_DRELU_BACKWARD:
            tge_drelu_backward(a[0].i, a[1].p, a[2].p, a[3].p);
            break;
        case TGE_SCROSS_ENTROPY:
            result = tge_scross_entropy(a[0].i, a[1].i, a[2].p, a[3].p, a[4].p, a[5].p);
            failed = result >= 0;
            break;
        case TGE_DCROSS_ENTROPY:
            result = tge_dcross_entropy(a[0].i, a[1].i, a[2].p, a[3].p, a[4].p, a[5].p);
            failed = result >= 0;
            break;
        case TGE_SIM2COL:
            tge_sim2col(a[0].p, a[1].p, a[2].p, a[3].i);
            break;
        case TGE_DIM2COL:
            tge_dim2col(a[0].p, a[1].p, a[2].p, a[3].i);
            break;
        case TGE_SCOL2IM:
            tge_scol2im(a[0].p, a[1].p, a[2].p, a[3].i);
            break;
        case TGE_DCOL2IM:
            tge_dcol2im(a[0].p, a[1].p, a[2].p, a[3].i);
            break;
        case TGE_SMAX_POOL:
            tge_smax_pool(a[0].p, a[1].p, a[2].p, a[3].p, a[4].i);
            break;
        case TGE_DMAX_POOL:
            tge_dmax_pool(a[0].p, a[1].p, a[2].p, a[3].p, a[4].i);
            break;
        case TGE_SMAX_POOL_BACKWARD:
            result = tge_smax_pool_backward(a[0].p, a[1].p, a[2].p, a[3].p);
            failed = result != 0;
            break;
        case TGE_DMAX_POOL_BACKWARD:
            result = tge_dmax_pool_backward(a[0].p, a[1].p, a[2].p, a[3].p);
            failed = result != 0;
            break;
        case TGE_STOTAL:
            tge_stotal(a[0].i, a[1].p, a[2].d, a[3].p);
            break;
        case TGE_DTOTAL:
            tge_dtotal(a[0].i, a[1].p, a[2].d, a[3].p);
            break;
        case TGE_SSCALE_ROWS:
            tge_sscale_rows(a[0].i, a[1].i, a[2].p, a[3].p, a[4].i, a[5].d, a[6].p);
            break;
        case TGE_DSCALE_ROWS:
            tge_dscale_rows(a[0].i, a[1].i, a[2].p, a[3].p, a[4].i, a[5].d, a[6].p);
            break;
        case TGE_SBATCH_MAJOR:
            tge_sbatch_major(a[0].i, a[1].i, a[2].i, a[3].p, a[4].p, a[5].i, a[6].p, a[7].i);
            break;
        case TGE_DBATCH_MAJOR:
            tge_dbatch_major(a[0].i, a[1].i, a[2].i, a[3].p, a[4].p, a[5].i, a[6].p, a[7].i);
            break;
        case TGE_SCHANNEL_MAJOR:
            tge_schannel_major(a[0].i, a[1].i, a[2].i, a[3].p, a[4].p, a[5].p, a[6].p, a[7].i);
            break;
        case TGE_DCHANNEL_MAJOR:
            tge_dchannel_major(a[0].i, a[1].i, a[2].i, a[3].p, a[4].p, a[5].p, a[6].p, a[7].i);
            break;
        case TGE_SWINOGRAD_INPUT:
            tge_swinograd_input(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_DWINOGRAD_INPUT:
            tge_dwinograd_input(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_SWINOGRAD_INPUT_BACKWARD:
            tge_swinograd_input_backward(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_DWINOGRAD_INPUT_BACKWARD:
            tge_dwinograd_input_backward(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i);
            break;
        case TGE_SWINOGRAD_OUTPUT:
            tge_swinograd_output(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i, a[6].p, a[7].i);
            break;
        case TGE_DWINOGRAD_OUTPUT:
            tge_dwinograd_output(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].i, a[6].p, a[7].i);
            break;
        case TGE_SWINOGRAD_OUTPUT_BACKWARD:
            tge_swinograd_output_backward(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].p, a[6].p,
                                           a[7].i, a[8].i);
            break;
        case TGE_DWINOGRAD_OUTPUT_BACKWARD:
            tge_dwinograd_output_backward(a[0].p, a[1].p, a[2].i, a[3].p, a[4].p, a[5].p, a[6].p,
                                           a[7].i, a[8].i);
            break;
        default:   /* not a kernel: the table is corrupt */
            result = -2;
            failed = 1;
        }
        if (failed) {
            *status = result;
            return c;
        }
    }
    return n;
}
