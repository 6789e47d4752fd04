/* One instruction-set flavour of every kernel, for one element type.
 *
 * Included several times by kernels.c, each time under a different `#pragma GCC target`, with
 *   T   element type (float or double),   VB  vector width in bytes (16, 32 or 64),
 *   SUF a suffix that makes the function names unique (e.g. f32_avx2),
 *   LANES  VB / sizeof(T), spelled out for the preprocessor.
 * GCC vector extensions keep the code ISA-neutral: `V` is a vector of VB bytes, and the compiler
 * emits SSE, AVX2 or AVX-512 instructions for it depending on the target in force.
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

#define VL ((int)(VB / sizeof(T)))   /* lanes per vector */
#define MR 6                          /* rows of the register tile of C */
#define NR (2 * VL)                   /* columns of the register tile: two vectors */
#define KC 256                        /* depth of one packed block (fits L1 with a tile of B) */
#define NC 1024                       /* columns of one packed block of B (fits L2) */
#define EXP(x) (sizeof(T) == sizeof(float) ? expf(x) : exp(x))
#define LOG(x) (sizeof(T) == sizeof(float) ? logf(x) : log(x))
#define SMALL_M 32                    /* up to this many rows (or depth), skip packing */
/* __builtin_shufflevector (GCC 12 and later, clang) turns vectors in registers: hsum and the
 * transposing pack_b use it, with plainer code without it. TGE_NO_SHUFFLEVECTOR builds the plainer
 * code anyway (CI checks it, as GCC 10 and 11 would build it). */
#if defined(__has_builtin) && !defined(TGE_NO_SHUFFLEVECTOR)
#if __has_builtin(__builtin_shufflevector)
#define SHUFFLES 1
#endif
#endif
#ifndef SHUFFLES
#define SHUFFLES 0
#endif
#define AHEAD 16                      /* rows of B fetched ahead by the deep direct tiles */

typedef T FN(vec) __attribute__((vector_size(VB), aligned(sizeof(T)), may_alias));
#define V FN(vec)
/* The integer vector of the same lanes, for masks. */
#if VB / LANES == 4
typedef int32_t FN(ivec) __attribute__((vector_size(VB)));
#else
typedef int64_t FN(ivec) __attribute__((vector_size(VB)));
#endif
#define IV FN(ivec)

/* V is declared with the alignment of one T and may_alias, so these are plain unaligned vector
 * moves. (Through __builtin_memcpy, GCC split each AVX2 load into two SSE halves bounced through
 * the stack and kept the accumulators in memory: AVX2 ran slower than SSE2.) */
static inline V FN(load)(const T *p) { return *(const V *)p; }
static inline void FN(store)(T *p, V v) { *(V *)p = v; }

/* Elements from p to the next 64-byte boundary, at most n. NumPy aligns arrays to 16 bytes only,
 * and a vector access that straddles two cache lines costs two. */
static inline long FN(to_line)(const T *p, long n)
{
    long k = (long)((-(uintptr_t)p) % 64 / sizeof(T));
    return k < n ? k : n;
}

/* C_tile = alpha * acc + beta * C_tile + bias (C not read when beta == 0; bias, the tile's part
 * of a row vector added to every row, may be NULL); of an edge tile only the m x n part that
 * exists is written. */
static inline void FN(store_tile)(V acc[MR][2], T *restrict c, long ldc, T alpha, T beta,
                                  const T *bias, int m, int n)
{
    if (m == MR && n == NR) {
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < 2; j++) {
                T *cp = c + i * ldc + j * VL;
                V r = alpha * acc[i][j];
                if (beta != 0) r += beta * FN(load)(cp);
                if (bias) r += FN(load)(bias + j * VL);
                FN(store)(cp, r);
            }
        return;
    }
    T tile[MR * NR];  /* an edge tile: write only the m x n part that exists */
    for (int i = 0; i < MR; i++) {
        FN(store)(tile + i * NR, acc[i][0]);
        FN(store)(tile + i * NR + VL, acc[i][1]);
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            T r = alpha * tile[i * NR + j] + (bias ? bias[j] : 0);
            c[i * ldc + j] = beta != 0 ? r + beta * c[i * ldc + j] : r;
        }
}

/* The micro-kernel: an MR x NR tile of C lives in 2*MR vector registers while k runs over the
 * packed panels a (MR values per k) and b (NR values per k); then store_tile writes it. */
static void FN(micro)(long kc, const T *restrict a, const T *restrict b, T *restrict c, long ldc,
                      T alpha, T beta, const T *bias, int m, int n)
{
    V acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (V){0};
    for (long p = 0; p < kc; p++) {
        V b0 = FN(load)(b), b1 = FN(load)(b + VL);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            acc[i][0] += a[i] * b0;
            acc[i][1] += a[i] * b1;
        }
        a += MR;
        b += NR;
    }
    FN(store_tile)(acc, c, ldc, alpha, beta, bias, m, n);
}

/* Copy the mc x kc block of op(A) at (i0, p0) into row panels of MR, zero-padded. */
static void FN(pack_a)(int trans, const T *A, long lda, long i0, long p0, long mc, long kc, T *out)
{
    for (long ir = 0; ir < mc; ir += MR) {
        int m = mc - ir < MR ? (int)(mc - ir) : MR;
        for (long p = 0; p < kc; p++) {
            for (int i = 0; i < m; i++) {
                long row = i0 + ir + i, col = p0 + p;
                out[p * MR + i] = trans ? A[col * lda + row] : A[row * lda + col];
            }
            for (int i = m; i < MR; i++) out[p * MR + i] = 0;
        }
        out += MR * kc;
    }
}

/* Interleave the lanes of a and b: (a0, b0, a1, b1, ...) from their first halves (lo) or their
 * second halves (hi). Applied log2(VL) times to VL rows, pairing row i with row i + VL/2 each
 * time, they transpose a VL x VL block in registers (see transpose). */
#if SHUFFLES
#if LANES == 16
#define LO(a, b) __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define HI(a, b) __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#elif LANES == 8
#define LO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define HI(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#elif LANES == 4
#define LO(a, b) __builtin_shufflevector(a, b, 0, 4, 1, 5)
#define HI(a, b) __builtin_shufflevector(a, b, 2, 6, 3, 7)
#else
#define LO(a, b) __builtin_shufflevector(a, b, 0, 2)
#define HI(a, b) __builtin_shufflevector(a, b, 1, 3)
#endif
/* r[j][l] becomes r[l][j]. One round takes rows (i, i + VL/2) to rows (2i, 2i + 1); after
 * log2(VL) rounds element (j, l) has moved to (l, j). */
static inline void FN(transpose)(V r[VL])
{
    for (int round = 1; round < VL; round *= 2) {
        V t[VL];
        for (int i = 0; i < VL / 2; i++) {
            t[2 * i] = LO(r[i], r[i + VL / 2]);
            t[2 * i + 1] = HI(r[i], r[i + VL / 2]);
        }
        for (int i = 0; i < VL; i++) r[i] = t[i];
    }
}
#undef LO
#undef HI
#endif

/* Copy the kc x nc block of op(B) at (p0, j0) into column panels of NR, zero-padded: panel jr
 * holds op(B)[p][jr..jr+NR) for p = 0..kc-1, one after the other. The whole panels are copied a
 * vector at a time (element by element, the packing took longer than the products of a 64-row
 * block: 64x500 @ 500x4096 and 64x4096 @ (500x4096)^T); the last, partial one element by element,
 * as is every panel of a transposed B without SHUFFLES. */
static void FN(pack_b)(int trans, const T *B, long ldb, long p0, long j0, long kc, long nc, T *out)
{
    const long whole = nc / NR * NR;   /* columns in whole panels */
    if (!trans) {   /* B's rows run along j: read them in order, a vector to each panel */
        for (long p = 0; p < kc; p++) {
            const T *src = B + (p0 + p) * ldb + j0;
            for (long jr = 0; jr < whole; jr += NR) {
                FN(store)(out + jr * kc + p * NR, FN(load)(src + jr));
                FN(store)(out + jr * kc + p * NR + VL, FN(load)(src + jr + VL));
            }
        }
    }
#if SHUFFLES
    else {   /* op(B)[p][j] = B[j][p]: VL x VL blocks transposed */
        for (long jr = 0; jr < whole; jr += NR) {
            T *panel = out + jr * kc;
            long p = 0;
            for (; p + VL <= kc; p += VL)
                for (int h = 0; h < NR; h += VL) {   /* the panel's two vectors of columns */
                    V r[VL];
                    for (int j = 0; j < VL; j++) r[j] = FN(load)(B + (j0 + jr + h + j) * ldb + p0 + p);
                    FN(transpose)(r);
                    for (int l = 0; l < VL; l++) FN(store)(panel + (p + l) * NR + h, r[l]);
                }
            for (; p < kc; p++)
                for (int j = 0; j < NR; j++) panel[p * NR + j] = B[(j0 + jr + j) * ldb + p0 + p];
        }
    }
#endif
    for (long jr = SHUFFLES || !trans ? whole : 0; jr < nc; jr += NR) {
        int n = nc - jr < NR ? (int)(nc - jr) : NR;
        T *panel = out + jr * kc;
        for (long p = 0; p < kc; p++) {
            for (int j = 0; j < n; j++)
                panel[p * NR + j] = trans ? B[(j0 + jr + j) * ldb + p0 + p] : B[(p0 + p) * ldb + j0 + jr + j];
            for (int j = n; j < NR; j++) panel[p * NR + j] = 0;
        }
    }
}

/* Columns [j_begin, j_end) of C: blocks of B (NC x KC) packed once and reused for all rows. */
static void FN(gemm_cols)(int ta, int tb, long M, long K, T alpha, const T *A, long lda,
                          const T *B, long ldb, T beta, T *C, long ldc, const T *bias,
                          long j_begin, long j_end, T *abuf, T *bbuf)
{
    long mpad = (M + MR - 1) / MR * MR;
    for (long jc = j_begin; jc < j_end; jc += NC) {
        long nc = j_end - jc < NC ? j_end - jc : NC;
        for (long pc = 0; pc < K; pc += KC) {
            long kc = K - pc < KC ? K - pc : KC;
            T beta_block = pc == 0 ? beta : 1;  /* later K blocks add to what the first wrote */
            const T *bias_block = pc == 0 ? bias : NULL;
            FN(pack_b)(tb, B, ldb, pc, jc, kc, nc, bbuf);
            FN(pack_a)(ta, A, lda, 0, pc, M, kc, abuf);
            for (long jr = 0; jr < nc; jr += NR) {
                int n = nc - jr < NR ? (int)(nc - jr) : NR;
                for (long ir = 0; ir < mpad; ir += MR) {
                    int m = M - ir < MR ? (int)(M - ir) : MR;
                    FN(micro)(kc, abuf + ir * kc, bbuf + jr * kc, C + ir * ldc + jc + jr, ldc,
                              alpha, beta_block, bias_block ? bias_block + jc + jr : NULL, m, n);
                }
            }
        }
    }
}

/* Small M (a mini-batch of 12): packing B would cost as much as the product itself, so the
 * kernels below read A and B where they are. The register tile is the same MR x NR one; A(i, p)
 * is read through two strides so that op(A) = A^T costs nothing. */
/* One direct tile with `rows` rows of A: the k loop, then the store. Always inlined with a
 * constant `rows`, so each row count gets its own unrolled copy with the accumulators in
 * registers from the first multiply to the store (a one-row product, batch 1, does one row's
 * work, not MR rows'). Storing here, not after the caller's switch, matters: where the cases
 * met again GCC parked all accumulators on the stack, 24 extra moves per 12-deep tile.
 * `ahead` > 0 asks for B's row that many rows on to be fetched into cache (see gemm_direct). */
static inline __attribute__((always_inline)) void FN(direct_tile)(const int rows, long kc,
        const T *const *arow, long a_cs, const T *b, long ldb, T *restrict c, long ldc, T alpha,
        T beta, const T *bias, int m, int n, long ahead)
{
    V acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (V){0};
    for (long p = 0; p < kc; p++) {
        V b0 = FN(load)(b + p * ldb), b1 = FN(load)(b + p * ldb + VL);
        if (ahead) __builtin_prefetch(b + (p + ahead) * ldb);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            T ai = arow[i][p * a_cs];
            acc[i][0] += ai * b0;
            acc[i][1] += ai * b1;
        }
    }
    FN(store_tile)(acc, c, ldc, alpha, beta, bias, m, n);
}

static void FN(micro_direct)(long kc, const T *a, long a_rs, long a_cs, const T *b, long ldb,
                             T *restrict c, long ldc, T alpha, T beta, const T *bias, int m, int n,
                             long ahead)
{
    /* An edge tile with n < NR columns reads a zero-padded copy of its strip of B, so the
     * vector loads never run past the matrix. */
    const T *arow[MR];
    for (int i = 0; i < MR; i++) arow[i] = a + (i < m ? i : m - 1) * a_rs;
    T bpad[n < NR ? KC * NR : 1] __attribute__((aligned(64)));
    if (n < NR) {
        for (long p = 0; p < kc; p++)
            for (int j = 0; j < NR; j++) bpad[p * NR + j] = j < n ? b[p * ldb + j] : 0;
        b = bpad;
        ldb = NR;
        ahead = 0;
    }
    switch (m) {
    case 1: FN(direct_tile)(1, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    case 2: FN(direct_tile)(2, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    case 3: FN(direct_tile)(3, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    case 4: FN(direct_tile)(4, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    case 5: FN(direct_tile)(5, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    default: FN(direct_tile)(MR, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead); break;
    }
}

/* One tile of C: a full one inlined into the caller's loop (at K = 12 a call per tile cost as
 * much as the tile's arithmetic: 512x12 @ 12x784 ran at 157 GFLOP/s, 184 inlined), an edge tile
 * through micro_direct. */
static inline __attribute__((always_inline)) void FN(tile_direct)(long kc, const T *a, long a_rs,
        long a_cs, const T *b, long ldb, T *restrict c, long ldc, T alpha, T beta, const T *bias,
        int m, int n, long ahead)
{
    if (m == MR && n == NR) {
        const T *arow[MR];
        for (int i = 0; i < MR; i++) arow[i] = a + i * a_rs;
        FN(direct_tile)(MR, kc, arow, a_cs, b, ldb, c, ldc, alpha, beta, bias, MR, NR, ahead);
    } else {
        FN(micro_direct)(kc, a, a_rs, a_cs, b, ldb, c, ldc, alpha, beta, bias, m, n, ahead);
    }
}

/* SGD's step fused into the product that made the weight gradient C (see linear_backward):
 * U[i][j] += step * C[i][j] for rows [i0, i1) and columns [j0, j1), written as axpy writes
 * `y += alpha * x`, so that the numbers are bit for bit those of a separate axpy_many. */
static void FN(step_rows)(T *U, long ldu, T step, const T *C, long ldc, long i0, long i1, long j0,
                          long j1)
{
    for (long i = i0; i < i1; i++) {
        T *restrict u = U + i * ldu;
        const T *restrict c = C + i * ldc;
        for (long j = j0; j < j1; j++) u[j] += step * c[j];
    }
}

/* Shallow K (weight gradients at a small batch, a first convolution's few taps): B is a few
 * rows, and the work is writing C, so sweep C row block by row block, in the order memory runs,
 * NC columns at a time: B's NC-column block then stays in L2 for all the row blocks. (Without the
 * blocks, 20x25 @ 25x36864, the shape of conv1 of the lecture's CNN at batch 64, read its 3.7 MB
 * B from memory once per row block: 52 GFLOP/s, 69 with them. OpenBLAS does conv1 by default,
 * see c_kernels.numpy_is_faster; the blocks serve wide weight gradients.) When C is overwritten
 * (beta == 0) tiles may overlap, which keeps every tile full width: the first at j_begin, the
 * next from C's 64-byte boundary on (so no store straddles two cache lines), the last one of a
 * block ending at the block's end. An overlapped column is computed twice, identically. Aligning
 * costs a tile per row block, so only long rows are aligned (512x12 @ 12x784 into a NumPy array,
 * which is 16-byte aligned: 58 -> 47 us; 96x12 @ 12x128 would lose 25%). Inlined twice: see
 * gemm_direct. With U, SGD's step too. */
static inline __attribute__((always_inline)) void FN(gemm_shallow)(long M, long K, T alpha,
        const T *A, long a_rs, long a_cs, const T *B, long ldb, T beta, T *C, long ldc,
        const T *bias, long j_begin, long j_end, T *U, long ldu, T step)
{
    int overlap = beta == 0 && j_end - j_begin >= NR;
    int align = overlap && j_end - j_begin >= 8 * NR && ldc * sizeof(T) % 64 == 0;
    long head = align ? FN(to_line)(C + j_begin, NR) : 0;
    for (long jc = j_begin, jc_end; jc < j_end; jc = jc_end) {
        jc_end = j_end - jc > (jc == j_begin ? head : 0) + NC ? jc + (jc == j_begin ? head : 0) + NC : j_end;
        for (long ir = 0; ir < M; ir += MR) {
            int m = M - ir < MR ? (int)(M - ir) : MR;
            for (long jr = jc; jr < jc_end; jr = jr == j_begin && head ? jr + head : jr + NR) {
                long j = overlap && jr + NR > jc_end ? jc_end - NR : jr;
                int n = j_end - j < NR ? (int)(j_end - j) : NR;
                FN(tile_direct)(K, A + ir * a_rs, a_rs, a_cs, B + j, ldb, C + ir * ldc + j, ldc,
                                alpha, beta, bias ? bias + j : NULL, m, n, 0);
            }
            /* the row block just written is still in L1: the step reads it there (one pass over
             * C from memory fewer than an axpy_many after the product: 22% of the two for the
             * MLP's first layer at batch 12) */
            if (U) FN(step_rows)(U, ldu, step, C, ldc, ir, ir + m, jc, jc_end);
        }
    }
}

static void FN(gemm_direct)(int ta, long M, long K, T alpha, const T *A, long lda, const T *B,
                            long ldb, T beta, T *C, long ldc, const T *bias, long j_begin, long j_end,
                            T *U, long ldu, T step)
{
    long a_rs = ta ? 1 : lda, a_cs = ta ? lda : 1;
    if (K <= SMALL_M) {
        /* The weight gradient G^T X gets a copy of the sweep with constants: the rows of
         * op(A) = G^T one element apart, so the broadcasts of a tile's six rows are six offsets
         * from one pointer, and alpha 1, beta 0 and no bias, so its stores are only stores (in
         * the general copy, at K = 12, GCC kept row offsets on the stack and tested and applied
         * alpha, beta and bias row by row: 512x12 @ 12x784 1.03x faster, 128x12 @ 12x256 1.1x). */
        if (ta && alpha == 1 && beta == 0 && !bias)
            FN(gemm_shallow)(M, K, 1, A, 1, lda, B, ldb, 0, C, ldc, NULL, j_begin, j_end, U, ldu, step);
        else
            FN(gemm_shallow)(M, K, alpha, A, a_rs, a_cs, B, ldb, beta, C, ldc, bias, j_begin, j_end,
                             U, ldu, step);
        return;
    }
    /* Deep K (the input's gradient g W at a small batch): strip by strip of B, whose loads are
     * now most of the traffic. The same overlapping full tiles, the second one starting at B's
     * 64-byte boundary, so that no load of B straddles two lines. A strip finishes all of K
     * before the next begins, so an overlapped column's partial sums are overwritten by the next
     * strip's first block and then completed. The first row block of a strip meets B's rows for
     * the first time, one line each, thousands of bytes apart: the hardware prefetchers do not
     * follow that across pages, so it asks for the row AHEAD rows on itself. */
    int overlap = beta == 0 && j_end - j_begin >= NR;
    int align = overlap && j_end - j_begin >= 8 * NR && ldb * sizeof(T) % 64 == 0;
    long head = align ? FN(to_line)(B + j_begin, NR) : 0;
    for (long jr = j_begin; jr < j_end; jr = jr == j_begin && head ? jr + head : jr + NR) {
        long j = overlap && jr + NR > j_end ? j_end - NR : jr;
        int n = j_end - j < NR ? (int)(j_end - j) : NR;
        for (long pc = 0; pc < K; pc += KC) {  /* a KC x NR strip of B stays in L1 for all rows */
            long kc = K - pc < KC ? K - pc : KC;
            T beta_block = pc == 0 ? beta : 1;
            const T *bias_block = pc == 0 && bias ? bias + j : NULL;
            for (long ir = 0; ir < M; ir += MR) {
                int m = M - ir < MR ? (int)(M - ir) : MR;
                FN(tile_direct)(kc, A + ir * a_rs + pc * a_cs, a_rs, a_cs, B + pc * ldb + j, ldb,
                                C + ir * ldc + j, ldc, alpha, beta_block, bias_block, m, n,
                                ir == 0 ? AHEAD : 0);
            }
        }
    }
    if (U) FN(step_rows)(U, ldu, step, C, ldc, 0, M, j_begin, j_end);
}

/* C = A B^T with B stored N x K (``x @ W.T`` in nn.Linear): rows of A and rows of B are both
 * contiguous along k, so each C element is a dot product vectorised along k. A DM x DN block of
 * dot products shares its loads; a block of B rows stays in L1 while all rows of A pass by.
 * On AVX-512, 6 x 4 of the 32 registers hold accumulators (the best of 4x4, 4x6, 6x4, 6x3, 8x3,
 * 3x8, 12x2 measured at a batch of 12). AVX2 and SSE2 have 16 registers: 4 x 3 fills them all
 * (12 + 3 of B + 1 of A). On AVX2, next to the masked parts of gemm_dot, GCC compiled 4 x 3 to 15
 * loads per 12 multiply-adds and 3 x 4 to 11; without them the two ran even (4x3, 3x3, 6x2, 2x6,
 * 5x2, 2x5 measured with the aligned loop: 3 x 4 was the fastest). */
#define DM (VB == 64 ? 6 : VB == 32 ? 3 : 4)
#define DN (VB == 64 ? 4 : VB == 32 ? 4 : 3)

/* The sum of a vector's lanes: fold it in half log2(LANES) times (a lane-by-lane loop cost as
 * much as the dot products themselves when K is a few hundred). */
static inline T FN(hsum)(V v)
{
#if SHUFFLES
#if LANES == 16
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#elif LANES == 8
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#elif LANES == 4
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2);
#elif LANES == 2
    v += __builtin_shufflevector(v, v, 1, 0);
#endif
    return v[0];
#else
    T s = 0;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
#endif
}

/* The k loop of a block of dot products with `rows` rows of A (inlined with a constant), over
 * whole vectors from p0 to p1. */
static inline __attribute__((always_inline)) void FN(dot_rows)(const int rows, long p0, long p1,
        const T *const *arow, const T *const *brow, V acc[DM][DN])
{
    for (long p = p0; p < p1; p += VL) {
        V b[DN];  /* DN vectors of B, then one row of A at a time: DM*DN + DN + 1 registers */
        for (int j = 0; j < DN; j++) b[j] = FN(load)(brow[j] + p);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            V a = FN(load)(arow[i] + p);
            for (int j = 0; j < DN; j++) acc[i][j] += a * b[j];
        }
    }
}

/* One vector at p of which only the lanes set in `keep` count: the part of a row after the last
 * whole vector. Both A and B are masked, so that a value outside the part (an inf, say) never
 * meets a zero. Not inlined: inlined, it changed how GCC allocated the
 * registers of the main loop, which then loaded each row of A three times (15 loads per 12
 * multiply-adds instead of 7). */
static __attribute__((noinline)) void FN(dot_part)(int rows, long p, IV keep,
        const T *const *arow, const T *const *brow, V acc[DM][DN])
{
    V b[DN];
    for (int j = 0; j < DN; j++) b[j] = (V)((IV)FN(load)(brow[j] + p) & keep);
    for (int i = 0; i < rows; i++) {
        V a = (V)((IV)FN(load)(arow[i] + p) & keep);
        for (int j = 0; j < DN; j++) acc[i][j] += a * b[j];
    }
}

/* A block's dot products over [p0, p1) of k: the whole vectors, then (with `tail`, in the last
 * piece of k) the masked vector at p = kv - VL. */
static inline __attribute__((always_inline)) void FN(dot_block)(const int tail, const int rows,
        long p0, long p1, long kv, IV last, const T *const *arow, const T *const *brow,
        V acc[DM][DN])
{
    FN(dot_rows)(rows, p0, p1, arow, brow, acc);
    if (tail) FN(dot_part)(rows, kv - VL, last, arow, brow, acc);
}

/* All DM x DN blocks of columns [j_begin, j_end) over the piece [p0, p1) of k; inlined twice by
 * gemm_dot (see there). The `first` piece writes each sum to C, later ones add theirs, and the
 * `final` one also applies alpha, beta and the bias (k comes in pieces only when beta == 0). */
static inline __attribute__((always_inline)) void FN(dot_sweep)(const int tail, long M, long K,
        long p0, long p1, int first, int final, long kv, IV last, T alpha, const T *A, long lda,
        const T *B, long ldb, T beta, T *C, long ldc, const T *bias, long j_begin, long j_end)
{
    for (long j0 = j_begin; j0 < j_end; j0 += DN) {
        int n = j_end - j0 < DN ? (int)(j_end - j0) : DN;
        const T *brow[DN];  /* past the last column, repeat it: valid memory, result discarded */
        for (int j = 0; j < DN; j++) brow[j] = B + (j0 + (j < n ? j : n - 1)) * ldb;
        for (long i0 = 0; i0 < M; i0 += DM) {
            int m = M - i0 < DM ? (int)(M - i0) : DM;
            const T *arow[DM];
            for (int i = 0; i < DM; i++) arow[i] = A + (i0 + (i < m ? i : m - 1)) * lda;
            V acc[DM][DN];
            for (int i = 0; i < DM; i++)
                for (int j = 0; j < DN; j++) acc[i][j] = (V){0};
            switch (m) {  /* (no test of kv here: GCC then zeroed the accumulators in memory) */
            case 1: FN(dot_block)(tail, 1, p0, p1, kv, last, arow, brow, acc); break;
            case 2: FN(dot_block)(tail, 2, p0, p1, kv, last, arow, brow, acc); break;
#if DM > 3
            case 3: FN(dot_block)(tail, 3, p0, p1, kv, last, arow, brow, acc); break;
#endif
#if DM > 4
            case 4: FN(dot_block)(tail, 4, p0, p1, kv, last, arow, brow, acc); break;
            case 5: FN(dot_block)(tail, 5, p0, p1, kv, last, arow, brow, acc); break;
#endif
            default: FN(dot_block)(tail, DM, p0, p1, kv, last, arow, brow, acc); break;
            }
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    T s = FN(hsum)(acc[i][j]);
                    T *cp = C + (i0 + i) * ldc + j0 + j;
                    if (!first) s += *cp;   /* the earlier pieces' sum */
                    if (!final) {
                        *cp = s;
                        continue;
                    }
                    for (long p = kv; p < K; p++) s += arow[i][p] * brow[j][p];
                    T r = alpha * s + (bias ? bias[j0 + j] : 0);
                    *cp = beta != 0 ? r + beta * *cp : r;
                }
        }
    }
}

/* Depth taken DOT_KC at a time when it is longer: a block then reads its rows of A and B from
 * L2 instead of memory (conv1's weight gradient at batch 64, 20x36864 @ (25x36864)^T, streamed
 * its 2.9 MB A from memory once for each of B's 7 blocks of rows: 39 GFLOP/s, 58 in pieces). */
#define DOT_KC 2048

static void FN(gemm_dot)(long M, long K, T alpha, const T *A, long lda, const T *B, long ldb,
                         T beta, T *C, long ldc, const T *bias, long j_begin, long j_end)
{
    /* Whole vectors from each row's start, then one masked vector for what is left; K below a
     * vector is summed one by one. (Starting the vectors at B's 64-byte boundary instead ran up
     * to 1.5x faster, as NumPy aligns rows to 16 bytes only and every other 32-byte load then
     * straddles two cache lines; but it made the order of each sum depend on where W sits in
     * memory, so the same model gave different last bits in two processes.) */
    long kv = K >= VL ? K : 0, end = kv - kv % VL;
    IV last;  /* the lanes of the tail vector (at p = K - VL) that are past end */
    for (int l = 0; l < VL; l++) last[l] = l >= VL - (kv - end) ? -1 : 0;
    long piece = beta == 0 && end > DOT_KC ? DOT_KC : end;
    for (long p0 = 0;; p0 += piece) {
        long p1 = end - p0 > piece ? p0 + piece : end;
        int first = p0 == 0, final = p1 == end;
        /* The piece that needs no masked part gets a copy of the sweep without the call, whose
         * accumulators never leave registers (12x128 @ (64x128)^T, against the kernel before
         * the masked parts: 1.12-1.14x faster, 1.05-1.08x with one copy for both). */
        if (final && end < kv)
            FN(dot_sweep)(1, M, K, p0, p1, first, final, kv, last, alpha, A, lda, B, ldb, beta, C,
                          ldc, bias, j_begin, j_end);
        else
            FN(dot_sweep)(0, M, K, p0, p1, first, final, kv, last, alpha, A, lda, B, ldb, beta, C,
                          ldc, bias, j_begin, j_end);
        if (final) return;
    }
}
#undef DOT_KC
#undef DM
#undef DN

static long FN(abuf_len)(long M) { return (M + MR - 1) / MR * MR * KC; }
static long FN(bbuf_len)(void) { return (long)NC * KC + NR * KC; }

/* One thread's share of the work: columns [j0, j1) of C, with its own packing buffers. */
typedef struct {
    int ta, tb, status;
    long M, K, lda, ldb, ldc, j0, j1;
    T alpha, beta;
    const T *A, *B, *bias;
    T *C;
    T *U;              /* U += step * C once C is done (linear_backward's fused SGD step), or NULL */
    long ldu;
    T step;
} FN(job);

static void FN(run_job)(void *arg)
{
    FN(job) *job = arg;
    job->status = 0;
    if (job->M <= SMALL_M && job->tb && !job->ta) {
        FN(gemm_dot)(job->M, job->K, job->alpha, job->A, job->lda, job->B, job->ldb, job->beta,
                     job->C, job->ldc, job->bias, job->j0, job->j1);
        if (job->U) FN(step_rows)(job->U, job->ldu, job->step, job->C, job->ldc, 0, job->M, job->j0, job->j1);
        return;
    }
    if ((job->M <= SMALL_M || job->K <= SMALL_M) && !job->tb) {
        FN(gemm_direct)(job->ta, job->M, job->K, job->alpha, job->A, job->lda, job->B, job->ldb,
                        job->beta, job->C, job->ldc, job->bias, job->j0, job->j1, job->U, job->ldu,
                        job->step);
        return;
    }
    T *abuf = NULL, *bbuf = NULL;
    if (posix_memalign((void **)&abuf, 64, sizeof(T) * FN(abuf_len)(job->M)) != 0 ||
        posix_memalign((void **)&bbuf, 64, sizeof(T) * FN(bbuf_len)()) != 0) {
        free(abuf);
        job->status = -1;
        return;
    }
    FN(gemm_cols)(job->ta, job->tb, job->M, job->K, job->alpha, job->A, job->lda, job->B, job->ldb,
                  job->beta, job->C, job->ldc, job->bias, job->j0, job->j1, abuf, bbuf);
    if (job->U) FN(step_rows)(job->U, job->ldu, job->step, job->C, job->ldc, 0, job->M, job->j0, job->j1);
    free(abuf);
    free(bbuf);
}

/* K = 1 (the weight gradients at batch 1): C = alpha a b^T, row i = (alpha a_i) b, one
 * streaming pass over C instead of tiles built for depth. */
static void FN(outer)(long M, long N, T alpha, const T *a, long a_stride, const T *restrict b,
                      T *restrict C, long ldc, T *U, long ldu, T step)
{
    for (long i = 0; i < M; i++) {
        T s = alpha * a[i * a_stride];
        T *restrict row = C + i * ldc;
        for (long j = 0; j < N; j++) row[j] = s * b[j];
        if (U) FN(step_rows)(U, ldu, step, C, ldc, i, i + 1, 0, N);   /* while the row is in L1 */
    }
}

/* Split the columns of C between up to `nthreads` threads (the calling one and pool workers).
 * With U (not NULL), also U += step * C once C is computed: the weight gradient's SGD step. */
static int FN(gemm_and_step)(int ta, int tb, long M, long N, long K, T alpha, const T *A, long lda,
                             const T *B, long ldb, T beta, T *C, long ldc, const T *bias,
                             int nthreads, T *U, long ldu, T step)
{
    if (M == 0 || N == 0) return 0;
    if (K == 0) {  /* op(A) op(B) is all zeros */
        for (long i = 0; i < M; i++)
            for (long j = 0; j < N; j++)
                C[i * ldc + j] = (beta != 0 ? beta * C[i * ldc + j] : 0) + (bias ? bias[j] : 0);
        if (U) FN(step_rows)(U, ldu, step, C, ldc, 0, M, 0, N);
        return 0;
    }
    if (K == 1 && beta == 0 && !bias && !tb) {  /* op(B) is one contiguous row */
        FN(outer)(M, N, alpha, A, ta ? 1 : lda, B, C, ldc, U, ldu, step);
        return 0;
    }
    long chunk = tge_piece_length(N, nthreads, NR);  /* whole register tiles per thread */
    FN(job) jobs[TGE_MAX_JOBS];
    int n = 0;
    for (long j0 = 0; j0 < N; j0 += chunk, n++) {
        long j1 = j0 + chunk < N ? j0 + chunk : N;
        jobs[n] = (FN(job)){ta, tb, 0, M, K, lda, ldb, ldc, j0, j1, alpha, beta, A, B, bias, C, U,
                            ldu, step};
    }
    tge_parallel(FN(run_job), jobs, sizeof(FN(job)), n);
    for (int i = 0; i < n; i++)
        if (jobs[i].status != 0) return jobs[i].status;
    return 0;
}

static int FN(gemm)(int ta, int tb, long M, long N, long K, T alpha, const T *A, long lda,
                    const T *B, long ldb, T beta, T *C, long ldc, const T *bias, int nthreads)
{
    return FN(gemm_and_step)(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, nthreads,
                             NULL, 0, 0);
}

/* nn.Linear's backward in one call. From dL/dy G (N x OUT), the layer's input X (N x IN) and its
 * weight W (OUT x IN):  DB = the column sums of G,  DW = G^T X,  DX = G W  (any may be NULL: not
 * wanted). One call instead of three saves ~3 us of Python per layer; DX comes last because the
 * ReLU's backward reads it next. With WS (not NULL; tinygrad_edu.jit passes the weight itself),
 * SGD's step WS += step * DW is taken in the same pass as DW (step = -lr), after DX has read W.
 * Returns 0, or -1 when a product could not allocate scratch. */
static int FN(linear_backward)(long N, long IN, long OUT, const T *G, long ldg, const T *X, long ldx,
                               const T *W, long ldw, T *DX, T *DW, T *DB, T *WS, T step, int nthreads)
{
    if (DB) {
        for (long j = 0; j < OUT; j++) DB[j] = 0;
        for (long i = 0; i < N; i++)
            for (long j = 0; j < OUT; j++) DB[j] += G[i * ldg + j];
    }
    if (WS && DX && FN(gemm)(0, 0, N, IN, OUT, 1, G, ldg, W, ldw, 0, DX, IN, NULL, nthreads) != 0)
        return -1;
    if (DW && FN(gemm_and_step)(1, 0, OUT, IN, N, 1, G, ldg, X, ldx, 0, DW, IN, NULL, nthreads,
                                WS, ldw, step) != 0)
        return -1;
    if (!WS && DX && FN(gemm)(0, 0, N, IN, OUT, 1, G, ldg, W, ldw, 0, DX, IN, NULL, nthreads) != 0)
        return -1;
    return 0;
}

static void FN(ger)(long M, long N, T alpha, const T *x, const T *y, T *A, long lda)
{
    for (long i = 0; i < M; i++) {
        T s = alpha * x[i];
        T *restrict row = A + i * lda;
        for (long j = 0; j < N; j++) row[j] += s * y[j];
    }
}

/* Y += alpha X, from the end back: the SGD update right after backward, whose last product wrote
 * the first layer's weight gradient front to back, so its end is still in L2 (the lecture MLP's
 * update: 57 -> 54 us). The elements before Y's first 64-byte boundary go last, one by one. */
static void FN(axpy)(long n, T alpha, const T *restrict X, T *restrict Y)
{
    long head = FN(to_line)(Y, n);
    for (long i = n - 1; i >= head; i--) Y[i] += alpha * X[i];
    for (long i = 0; i < head; i++) Y[i] += alpha * X[i];
}

/* Y := alpha X + beta Y: the momentum buffer's update, buf := momentum buf + (1 - dampening) g. */
static void FN(axpby)(long n, T alpha, const T *restrict X, T beta, T *restrict Y)
{
    for (long i = 0; i < n; i++) Y[i] = beta * Y[i] + alpha * X[i];
}

/* axpby_many in parallel: the arrays are seen as one run of elements, and each thread takes its
 * slice [begin, end) of that run. With beta == 1 it is axpy_many, and axpy does the slices. */
typedef struct {
    long count, begin, end;
    T alpha, beta;
    const long *n;
    const T *const *X;
    T *const *Y;
} FN(axpby_job);

static void FN(axpby_slice)(void *arg)
{
    FN(axpby_job) *job = arg;
    long start = 0;  /* where array i starts in the run */
    for (long i = 0; i < job->count && start < job->end; start += job->n[i], i++) {
        long lo = job->begin > start ? job->begin : start;
        long hi = job->end < start + job->n[i] ? job->end : start + job->n[i];
        if (lo >= hi) continue;
        const T *x = job->X[i] + (lo - start);
        T *y = job->Y[i] + (lo - start);
        if (job->beta == 1)
            FN(axpy)(hi - lo, job->alpha, x, y);
        else
            FN(axpby)(hi - lo, job->alpha, x, job->beta, y);
    }
}

static void FN(axpby_many)(long count, T alpha, T beta, const long *n, const T *const *X,
                           T *const *Y, int nthreads)
{
    long total = 0;
    for (long i = 0; i < count; i++) total += n[i];
    long chunk = tge_piece_length(total, nthreads, 16);  /* 16 elements: whole cache lines */
    FN(axpby_job) jobs[TGE_MAX_JOBS];
    int n_jobs = 0;
    for (long begin = 0; begin < total; begin += chunk, n_jobs++) {
        long end = begin + chunk < total ? begin + chunk : total;
        jobs[n_jobs] = (FN(axpby_job)){count, begin, end, alpha, beta, n, X, Y};
    }
    tge_parallel(FN(axpby_slice), jobs, sizeof(FN(axpby_job)), n_jobs);
}

static void FN(relu)(long n, const T *restrict Z, T *restrict Y)
{
    for (long i = 0; i < n; i++) Y[i] = Z[i] < 0 ? 0 : Z[i];  /* NaN < 0 is false: NaN stays */
}

static void FN(relu_backward)(long n, const T *restrict Y, const T *restrict G, T *restrict DZ)
{
    /* PyTorch's rule: 0 where Y <= 0 (whatever G is: inf and NaN too), G where Y > 0 or NaN */
    for (long i = 0; i < n; i++) DZ[i] = Y[i] <= 0 ? 0 : G[i];
}

/* Softmax cross-entropy of N rows of C logits Z against labels y, row by row:
 *   L[i] = -log softmax(Z[i])[y_i] = log sum_j e^(z_ij - m) - (z_iy_i - m),
 *   D[i] = dL[i]/dZ[i] = softmax(Z[i]) - onehot(y_i),
 * with m = max_j z_ij, so that no e^ exceeds 1 (logits of 1e4 stay finite). The gradient comes
 * out of the same pass: backward only has to scale it. A NaN logit makes its row NaN, as in
 * NumPy. Returns -1, or the first row whose label is outside 0..C-1 (checked here, in the pass
 * that reads it, instead of by a separate NumPy pass; D and L are then unfinished). */
static long FN(cross_entropy)(long N, long C, const T *restrict Z, const int64_t *restrict y,
                              T *restrict D, T *restrict L)
{
    for (long i = 0; i < N; i++) {
        if (y[i] < 0 || y[i] >= C) return i;
        const T *z = Z + i * C;
        T *d = D + i * C;
        T m = z[0];
        for (long j = 1; j < C; j++) m = z[j] > m ? z[j] : m;
        T sum = 0;
        for (long j = 0; j < C; j++) {
            d[j] = EXP(z[j] - m);
            sum += d[j];
        }
        for (long j = 0; j < C; j++) d[j] /= sum;
        d[y[i]] -= 1;
        L[i] = LOG(sum) - (z[y[i]] - m);
    }
    return -1;
}

#undef V
#undef IV
#undef VL
#undef MR
#undef NR
#undef KC
#undef NC
#undef SMALL_M
#undef SHUFFLES
#undef AHEAD
#undef EXP
#undef LOG
#undef FN
