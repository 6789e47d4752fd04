/* A persistent pool of worker threads (see pool.h).
 *
 * Why a pool: starting a thread costs 20-30 us, more than a whole batch-12 product of the lecture
 * MLP takes, so threads made per call only paid for huge products. Workers made once and kept
 * cost about a microsecond per hand-over. After a job a worker spins for a while (SPIN_NS): the
 * next product of a training step comes within microseconds. Then it sleeps on a condition
 * variable, so an idle process does not hold a core.
 *
 * Fork: a child gets none of the parent's threads, so it starts with an empty pool and makes its
 * own workers when it first needs them.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "pool.h"

#define MAX_WORKERS 63
#define SPIN_NS 1000000L  /* 1 ms awake after each job */

typedef struct {
    pthread_cond_t wake;
    atomic_uint posted;    /* number of the last job handed to this worker */
    atomic_uint finished;  /* number of the last job it has finished */
    atomic_int sleeping;
    void (*fn)(void *job);
    void *job;
} worker;

static struct {
    pthread_mutex_t lock;  /* held by a worker going to sleep, and by whoever wakes it */
    atomic_flag busy;      /* one caller at a time; others run their jobs alone */
    int started;           /* workers running in this process */
    unsigned job_number;
    worker workers[MAX_WORKERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, ATOMIC_FLAG_INIT, 0, 0, {{PTHREAD_COND_INITIALIZER}}};

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

/* Return once w->posted differs from `seen`: spin first, then sleep. */
static void wait_for_job(worker *w, unsigned seen)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&w->posted, memory_order_acquire) != seen) return;
        cpu_relax();
        if (i % 256 == 0 && elapsed_ns(&start) > SPIN_NS) break;
    }
    /* `sleeping` is set before `posted` is read again, and the poster sets `posted` before it
     * reads `sleeping` (both sequentially consistent): either we see the job, or it sees us
     * asleep and signals under the lock, which we hold until cond_wait releases it. */
    pthread_mutex_lock(&pool.lock);
    atomic_store(&w->sleeping, 1);
    while (atomic_load(&w->posted) == seen) pthread_cond_wait(&w->wake, &pool.lock);
    atomic_store(&w->sleeping, 0);
    pthread_mutex_unlock(&pool.lock);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    unsigned seen = 0;  /* posted starts at 0, and no job is numbered 0 */
    for (;;) {
        wait_for_job(w, seen);
        seen = atomic_load_explicit(&w->posted, memory_order_acquire);  /* fn, job visible now */
        w->fn(w->job);
        atomic_store_explicit(&w->finished, seen, memory_order_release);
    }
    return NULL;
}

static void forget_workers_after_fork(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pool.lock = fresh;  /* a parent thread may have held it at the fork */
    pool.started = 0;
    atomic_flag_clear(&pool.busy);
}

static void register_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_after_fork); }

/* Start workers until `wanted` run (at most MAX_WORKERS); returns how many there are. */
static int start_workers(int wanted)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    if (pool.started >= wanted) return wanted;
    pthread_attr_t attr;
    sigset_t all, previous;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);  /* workers inherit it: signals go to Python */
    while (pool.started < wanted) {
        worker *w = &pool.workers[pool.started];
        pthread_cond_init(&w->wake, NULL);
        atomic_store(&w->posted, 0);
        atomic_store(&w->finished, 0);
        atomic_store(&w->sleeping, 0);
        pthread_t thread;
        if (pthread_create(&thread, &attr, worker_main, w) != 0) break;
        pool.started++;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attr);
    return pool.started;
}

void tge_parallel(void (*fn)(void *job), void *jobs, size_t size, int n)
{
    char *job = jobs;
    if (n < 2 || atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        for (int i = 0; i < n; i++) fn(job + (size_t)i * size);  /* alone */
        return;
    }
    int helpers = start_workers(n - 1);
    unsigned number = ++pool.job_number ? pool.job_number : ++pool.job_number;
    for (int i = 0; i < helpers; i++) {
        worker *w = &pool.workers[i];
        w->fn = fn;
        w->job = job + (size_t)(i + 1) * size;
        atomic_store(&w->posted, number);
        if (atomic_load(&w->sleeping)) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&w->wake);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    fn(job);
    for (int i = helpers + 1; i < n; i++) fn(job + (size_t)i * size);  /* no worker started */
    for (int i = 0; i < helpers; i++)
        while (atomic_load_explicit(&pool.workers[i].finished, memory_order_acquire) != number)
            cpu_relax();
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}
