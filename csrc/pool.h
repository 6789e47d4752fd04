/* A persistent pool of worker threads for the kernels (internal: not part of the cffi interface).
 *
 * tge_parallel(fn, jobs, size, n) runs fn on each of the n jobs (an array of `size`-byte
 * records): job 0 on the calling thread, the others on pool workers, and returns when all are
 * done. When the pool is busy (another Python thread is inside a kernel) or a worker cannot be
 * started, the calling thread runs the remaining jobs itself: the result is the same, only slower.
 */
#ifndef TGE_POOL_H
#define TGE_POOL_H

#include <stddef.h>

void tge_parallel(void (*fn)(void *job), void *jobs, size_t size, int n);

#endif
