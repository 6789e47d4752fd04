/* Stress test of the thread pool for ThreadSanitizer (run by .ci/run; Python cannot load TSan):
 *
 *     gcc -O1 -g -std=gnu11 -fsanitize=thread -Icsrc csrc/pool_stress.c csrc/kernels.c csrc/pool.c \
 *         -o pool_stress -lpthread -lm && ./pool_stress
 *
 * Four callers at once (one holds the pool, the others run alone), pauses long enough for the
 * workers to fall asleep, and split SGD updates; every result is checked. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>  /* kernels.h names int64_t and cannot include it: cffi reads that file */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels.h"

enum { M = 12, K = 300, N = 200, ROUNDS = 300, CALLERS = 4 };

static void pause_2ms(void)
{
    struct timespec two_ms = {0, 2000000};
    nanosleep(&two_ms, NULL);
}

static void *caller(void *unused)
{
    (void)unused;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C = malloc(sizeof(float) * M * N);
    for (long i = 0; i < M * K; i++) A[i] = 1;
    for (long i = 0; i < K * N; i++) B[i] = 1;
    for (int r = 0; r < ROUNDS; r++) {
        tge_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, NULL, 2);
        for (long i = 0; i < M * N; i++)
            if (C[i] != K) { fprintf(stderr, "gemm: C[%ld] = %g, expected %d\n", i, C[i], K); exit(1); }
        if (r % 100 == 0) pause_2ms();  /* longer than the workers' spin: they go to sleep */
    }
    long n[2] = {1000, 3000};
    float *X[2], *Y[2];
    for (int a = 0; a < 2; a++) {
        X[a] = malloc(sizeof(float) * n[a]);
        Y[a] = malloc(sizeof(float) * n[a]);
        for (long i = 0; i < n[a]; i++) X[a][i] = 1, Y[a][i] = 2;
    }
    tge_saxpy_many(2, 0.5f, n, (const float *const *)X, Y, 3);
    for (int a = 0; a < 2; a++)
        for (long i = 0; i < n[a]; i++)
            if (Y[a][i] != 2.5f) { fprintf(stderr, "axpy_many: Y[%d][%ld] = %g\n", a, i, Y[a][i]); exit(1); }
    for (int a = 0; a < 2; a++) free(X[a]), free(Y[a]);
    free(A), free(B), free(C);
    return NULL;
}

int main(void)
{
    pthread_t threads[CALLERS];
    caller(NULL);
    for (int i = 0; i < CALLERS; i++) pthread_create(&threads[i], NULL, caller, NULL);
    for (int i = 0; i < CALLERS; i++) pthread_join(threads[i], NULL);
    puts("pool stress test: all results correct");
    return 0;
}
