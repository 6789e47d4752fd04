/* A persistent pool of worker threads (see pool.h).
 *
 * Why a pool: starting a thread costs 20-30 us, more than a whole batch-12 product of the lecture
 * MLP takes, so threads made per call only paid for huge products. Workers made once and kept
 * cost about a microsecond per hand-over. After a job a worker spins for a while (SPIN_NS): the
 * next product of a training step comes within microseconds. It yields the core every few
 * microseconds of that: on two cores, a spinner that did not kept a product handed to OpenBLAS
 * waiting for its second thread. Then it sleeps on a condition variable, so an idle process does
 * not hold a core.
 *
 * Jobs are claimed, not assigned: the caller and the workers take the next unclaimed job until
 * none is left. Waking a sleeping worker takes 100 us or more on a virtual machine; meanwhile the
 * caller simply does the jobs itself, so a late worker costs nothing but its share of one call.
 *
 * Fork: a child gets none of the parent's threads, so it starts with an empty pool and makes its
 * own workers when it first needs them.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "pool.h"

#define MAX_WORKERS (TGE_MAX_JOBS - 1)  /* the caller runs a job itself */
#define SPIN_NS 1000000L  /* 1 ms awake after each call */

static struct {
    pthread_mutex_t lock;  /* held by a worker going to sleep, and by whoever wakes the workers */
    pthread_cond_t wake;
    atomic_flag busy;      /* one caller at a time; the others run their jobs alone */
    int started;           /* workers running in this process */
    /* the call in progress: its number (bits 32-63), its job count (16-31) and the next
     * unclaimed job (0-15), in one word so that one compare-and-swap claims a job */
    _Atomic uint64_t claim;
    atomic_int finished;   /* jobs of this call done */
    atomic_int sleepers;
    void (*fn)(void *job);
    char *jobs;
    size_t size;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, ATOMIC_FLAG_INIT};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();  /* tells the core we are spinning: saves power, frees the sibling */
#endif
}

static long elapsed_ns(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

static uint32_t call_number(uint64_t claim) { return (uint32_t)(claim >> 32); }
static unsigned job_count(uint64_t claim) { return (unsigned)(claim >> 16) & 0xffff; }
static unsigned next_job(uint64_t claim) { return (unsigned)claim & 0xffff; }

/* Take unclaimed jobs of call `number` and run them, until none is left. A worker that comes
 * late finds the call over (another number, or every job taken) and does nothing: a job is run
 * only after a successful compare-and-swap, and the caller waits for every job it hands out. */
static void run_jobs(uint32_t number)
{
    uint64_t claim = atomic_load(&pool.claim);
    while (call_number(claim) == number && next_job(claim) < job_count(claim)) {
        if (!atomic_compare_exchange_weak(&pool.claim, &claim, claim + 1)) continue;
        pool.fn(pool.jobs + next_job(claim) * pool.size);  /* fields stable until it finishes */
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
        claim = atomic_load(&pool.claim);
    }
}

/* Return the number of the first call after `seen`: spin first, then sleep. */
static uint32_t wait_for_call(uint32_t seen)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned i = 1;; i++) {
        uint32_t number = call_number(atomic_load_explicit(&pool.claim, memory_order_acquire));
        if (number != seen) return number;
        cpu_relax();
        if (i % 256 == 0) {
            if (elapsed_ns(&start) > SPIN_NS) break;
            sched_yield();  /* a thread waiting for this core (OpenBLAS's, another process's) runs */
        }
    }
    /* `sleepers` goes up before `claim` is read again, and the caller sets `claim` before it
     * reads `sleepers` (both sequentially consistent): either we see the call, or the caller
     * sees a sleeper and broadcasts under the lock, which we hold until cond_wait releases it. */
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.sleepers, 1);
    while (call_number(atomic_load(&pool.claim)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
    atomic_fetch_sub(&pool.sleepers, 1);
    pthread_mutex_unlock(&pool.lock);
    return call_number(atomic_load(&pool.claim));
}

static void *worker_main(void *arg)
{
    uint32_t seen = (uint32_t)(uintptr_t)arg;  /* the call running when this worker was made */
    for (;;) {
        seen = wait_for_call(seen);
        run_jobs(seen);
    }
    return NULL;
}

static void forget_workers_after_fork(void)
{
    pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    pool.lock = fresh_lock;  /* a parent thread may have held it at the fork */
    pool.wake = fresh_cond;
    pool.started = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_flag_clear(&pool.busy);
}

static void register_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_after_fork); }

/* Start workers until `wanted` run (at most MAX_WORKERS; fewer if the system refuses). */
static void start_workers(int wanted)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    if (pool.started >= wanted) return;
    pthread_attr_t attr;
    sigset_t all, previous;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);  /* workers inherit it: signals go to Python */
    uintptr_t current = call_number(atomic_load(&pool.claim));
    while (pool.started < wanted) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, worker_main, (void *)current) != 0) break;
        pool.started++;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attr);
}

void tge_parallel(void (*fn)(void *job), void *jobs, size_t size, int n)
{
    if (n < 2 || n > 0xffff || atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        for (int i = 0; i < n; i++) fn((char *)jobs + (size_t)i * size);  /* alone */
        return;
    }
    start_workers(n - 1);
    uint32_t number = call_number(atomic_load(&pool.claim)) + 1;
    pool.fn = fn;
    pool.jobs = jobs;
    pool.size = size;
    atomic_store(&pool.finished, 0);
    atomic_store(&pool.claim, (uint64_t)number << 32 | (uint64_t)n << 16);  /* publishes the above */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    run_jobs(number);
    while (atomic_load_explicit(&pool.finished, memory_order_acquire) < n) cpu_relax();
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}
