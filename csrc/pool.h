/* A persistent pool of worker threads for the kernels (internal: not part of the cffi interface).
 *
 * tge_parallel(fn, jobs, size, n) runs fn on each of the n jobs (an array of `size`-byte
 * records) and returns when all are done: the calling thread and the pool's workers claim jobs
 * until none is left. When the pool is busy (another Python thread is inside a kernel), the
 * calling thread runs all the jobs itself, and with fewer workers than jobs (the system refused
 * a thread) it claims more of them: the result is the same, only slower.
 */
#ifndef TGE_POOL_H
#define TGE_POOL_H

#include <stddef.h>

#define TGE_MAX_JOBS 64

void tge_parallel(void (*fn)(void *job), void *jobs, size_t size, int n);

/* The length of each piece when [0, total) is cut for up to `nthreads` threads (at most
 * TGE_MAX_JOBS pieces): a multiple of `step`, so that no two threads share a register tile or a
 * cache line. The pieces are [0, len), [len, 2 len), ...; the last may be shorter. */
static inline long tge_piece_length(long total, int nthreads, long step)
{
    int t = nthreads < 1 ? 1 : nthreads > TGE_MAX_JOBS ? TGE_MAX_JOBS : nthreads;
    return ((total + t - 1) / t + step - 1) / step * step;
}

#endif
