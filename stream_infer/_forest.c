/* Tree ensemble scoring for stream_infer.adapters.forest: the same float32 operations, in the
 * same order, as XGBoost's CPU predictor, so margins and probabilities are bit-for-bit equal.
 *
 * A forest is `trees` complete binary trees of `depth` levels in heap order (children of node
 * k are 2k+1 and 2k+2): per inner node a column (bit 31 set when a missing value goes right)
 * and a float32 threshold, per tree 2^depth leaf values. A row goes right when
 * !(value < threshold), or, for NaN, when bit 31 says so; XGBoost's rule. Each row's margin
 * starts at `base` and adds the trees' leaves in tree order, in float32.
 *
 * On x86-64 with AVX2, blocks of 64 rows go 8 to a vector, transposed column by column twice:
 * once with NaN as +inf, once as they are. Each node reads the first copy when a missing value
 * goes right, the second when it goes left, so one ordered compare, value >= threshold, sends
 * every row the right way (a model with a NaN threshold takes the scalar loop). A row's node
 * is kept as its index within the level. The top six levels' nodes are picked with register
 * permutes instead of memory gathers, and the top four levels (at most 8 nodes) read the rows'
 * values with plain loads, blended by the node's bits, instead of gathering them. A block's 8
 * vectors go level by level side by side, the levels unrolled for depths up to 8. Trees are
 * visited in chunks that fit the L1 cache. A last block of more than 8 rows is padded; other
 * CPUs and the last rows otherwise take the scalar loop, which computes the same thing.
 *
 * Saabas contributions (XGBoost's approx_contribs) go 8 rows to a vector too, a row per lane,
 * each lane walking a tree level by level and adding the scalar loop's float32 values, in its
 * order, to per-column sums (contributions_avx2); other CPUs, rows of more than 64 columns and
 * a last 1 or 2 rows take the scalar loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 8
#define GROUPS 8
#define BLOCK (LANES * GROUPS)
#define CHUNK_BYTES 24576
#define MISSING_RIGHT ((uint32_t)1 << 31)

typedef struct {
    const float *x;
    Py_ssize_t rows, cols;
    const int32_t *feature;
    const float *threshold, *leaf;
    int depth, trees;
    float base;
    float *out;
} Job;

static void margins_scalar(const Job *job, Py_ssize_t r0)
{
    const int32_t inner = (1 << job->depth) - 1, leaves = 1 << job->depth;
    for (Py_ssize_t r = r0; r < job->rows; r++) {
        const float *row = job->x + r * job->cols;
        float acc = job->base;
        for (int t = 0; t < job->trees; t++) {
            const int32_t *f = job->feature + (Py_ssize_t)t * inner;
            const float *th = job->threshold + (Py_ssize_t)t * inner;
            int32_t k = 0;
            for (int d = 0; d < job->depth; d++) {
                uint32_t fk = (uint32_t)f[k];
                float v = row[fk & ~MISSING_RIGHT];
                int32_t right = isnan(v) ? (int32_t)(fk >> 31) : !(v < th[k]);
                k = 2 * k + 1 + right;
            }
            acc += job->leaf[(Py_ssize_t)t * leaves + (k - inner)];
        }
        job->out[r] = acc;
    }
}

/* The 64-row blocks the vector path scores: the whole ones, and a last one it pads when that
 * holds more than 8 rows (a padded block costs about what 8 rows cost on the scalar path). */
static Py_ssize_t vector_blocks(Py_ssize_t rows)
{
    return rows / BLOCK + (rows % BLOCK > LANES);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))

/* Per node, where its column starts in a transposed block (transpose_blocks): in the copy
 * with NaN as +inf when a missing value goes right, else in the plain one. Then a row goes
 * right exactly when value >= threshold (false for NaN), unless a threshold is NaN (then
 * every value goes left); returns 0 when one is. */
AVX2 static int encode_columns(const Job *job, Py_ssize_t nodes, int32_t *at)
{
    const int32_t plain = (int32_t)job->cols;
    for (Py_ssize_t i = 0; i < nodes; i++) {
        const int32_t f = job->feature[i];
        at[i] = ((f & 0x7fffffff) + (f < 0 ? 0 : plain)) * BLOCK;
    }
    const Py_ssize_t inner = ((Py_ssize_t)1 << job->depth) - 1;
    int ordered = 1;
    for (Py_ssize_t i = 0; i < job->trees * inner; i++)
        ordered &= job->threshold[i] == job->threshold[i];
    return ordered;
}

/* Blocks of 64 rows of x, column by column, twice: first with NaN as +inf, then as they are
 * (column c of copy s of block b at xt + (b*2*cols + s*cols + c)*64); the rows past the end
 * of x are zeros. */
AVX2 static void transpose_blocks(const Job *job, Py_ssize_t blocks, float *xt)
{
    const Py_ssize_t cols = job->cols;
    for (Py_ssize_t b = 0; b < blocks; b++) {
        float *tb = xt + b * BLOCK * 2 * cols;
        for (Py_ssize_t i = 0; i < BLOCK; i++) {
            const Py_ssize_t r = b * BLOCK + i;
            for (Py_ssize_t c = 0; c < cols; c++) {
                const float v = r < job->rows ? job->x[r * cols + c] : 0.0f;
                tb[c * BLOCK + i] = isnan(v) ? INFINITY : v;
                tb[(cols + c) * BLOCK + i] = v;
            }
        }
    }
}

enum { FLOATS, INTS, BYTES };

/* Eight entries from p + i as 32-bit lanes: floats, int32s, or bytes (of which only four are
 * read, the rest 0, at level d == 2). */
AVX2 static inline __attribute__((always_inline)) __m256 eight(const void *p, int kind, int i,
                                                               int d)
{
    if (kind == FLOATS)
        return _mm256_loadu_ps((const float *)p + i);
    if (kind == INTS)
        return _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)((const int32_t *)p + i)));
    __m128i b;
    if (d == 2) {
        int32_t four;
        memcpy(&four, (const uint8_t *)p + i, 4);
        b = _mm_cvtsi32_si128(four);
    } else {
        b = _mm_loadl_epi64((const __m128i *)((const uint8_t *)p + i));
    }
    return _mm256_castsi256_ps(_mm256_cvtepu8_epi32(b));
}

/* The entries k (indexes within level d < 6) of a level whose first entry is at p: register
 * permutes of the level's entries, reading max(8, 2^d) of them (4 bytes at d == 2). */
AVX2 static inline __attribute__((always_inline)) __m256 level_pick(const void *p, int kind,
                                                                    int d, __m256i k)
{
#define PERMUTE(i) _mm256_permutevar8x32_ps(eight(p, kind, i, d), k)
    __m256 v = PERMUTE(0);
    if (d <= 3)
        return v;
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28));
    v = _mm256_blendv_ps(v, PERMUTE(8), bit3);
    if (d == 4)
        return v;
    const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 27));
    return _mm256_blendv_ps(v, _mm256_blendv_ps(PERMUTE(16), PERMUTE(24), bit3), bit4);
#undef PERMUTE
}

/* The values that 8 rows (at xg, in a transposed block) read at level d < 4, where a level
 * has at most 8 nodes: one load per node, picked by the node's bits. */
AVX2 static inline __m256 top_level_values(const float *xg, const int32_t *al, int d,
                                           __m256i k)
{
#define COLUMN(i) _mm256_loadu_ps(xg + al[i])
    if (d == 0)
        return COLUMN(0);
    const __m256 bit0 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 31));
    __m256 low = _mm256_blendv_ps(COLUMN(0), COLUMN(1), bit0);
    if (d == 1)
        return low;
    const __m256 bit1 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 30));
    __m256 four = _mm256_blendv_ps(low, _mm256_blendv_ps(COLUMN(2), COLUMN(3), bit0), bit1);
    if (d == 2)
        return four;
    __m256 high = _mm256_blendv_ps(_mm256_blendv_ps(COLUMN(4), COLUMN(5), bit0),
                                   _mm256_blendv_ps(COLUMN(6), COLUMN(7), bit0), bit1);
    return _mm256_blendv_ps(four, high, _mm256_castsi256_ps(_mm256_slli_epi32(k, 29)));
#undef COLUMN
}

/* Adds the leaves of trees t0 <= t < t1 to the margins acc of the rows of the transposed
 * block xb, level by level, 8 groups of 8 rows at a time. Inlined with a constant depth, so
 * that the levels and groups unroll. */
AVX2 static inline __attribute__((always_inline)) void block_trees(
    const Job *job, const int32_t *at, const float *xb, int t0, int t1, const int depth,
    __m256 *acc)
{
    const int32_t inner = (1 << depth) - 1, leaves = 1 << depth;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int t = t0; t < t1; t++) {
        const int32_t *a = at + (Py_ssize_t)t * inner;
        const float *th = job->threshold + (Py_ssize_t)t * inner;
        __m256i k[GROUPS]; /* each row's node, as its index within the level */
        for (int g = 0; g < GROUPS; g++)
            k[g] = _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int d = 0; d < depth; d++) {
            const int32_t first = (1 << d) - 1;
#pragma GCC unroll 8
            for (int g = 0; g < GROUPS; g++) {
                const float *xg = xb + g * LANES;
                __m256 tv, v;
                if (d < 4) {
                    tv = level_pick(th + first, FLOATS, d, k[g]);
                    v = top_level_values(xg, a + first, d, k[g]);
                } else {
                    __m256i av;
                    if (d < 6) {
                        tv = level_pick(th + first, FLOATS, d, k[g]);
                        av = _mm256_castps_si256(level_pick(a + first, INTS, d, k[g]));
                    } else {
                        tv = _mm256_i32gather_ps(th + first, k[g], 4);
                        av = _mm256_i32gather_epi32((const int *)(a + first), k[g], 4);
                    }
                    v = _mm256_i32gather_ps(xg, _mm256_add_epi32(lane, av), 4);
                }
                /* right: all ones, so k becomes 2k + 1 */
                __m256i right = _mm256_castps_si256(_mm256_cmp_ps(v, tv, _CMP_GE_OQ));
                k[g] = _mm256_sub_epi32(_mm256_add_epi32(k[g], k[g]), right);
            }
        }
        const float *lf = job->leaf + (Py_ssize_t)t * leaves;
        for (int g = 0; g < GROUPS; g++)
            acc[g] = _mm256_add_ps(acc[g], _mm256_i32gather_ps(lf, k[g], 4));
    }
}

/* Scores the rows of the vector_blocks into sums (room for their margins), then out; xt is
 * room for the blocks transposed, at for every node's column offset. Returns how many rows
 * it scored: none when encode_columns refuses the model. */
AVX2 static Py_ssize_t margins_avx2(const Job *job, float *xt, int32_t *at, float *sums)
{
    const int32_t inner = (1 << job->depth) - 1, leaves = 1 << job->depth;
    const Py_ssize_t blocks = vector_blocks(job->rows);
    const Py_ssize_t done = job->rows < blocks * BLOCK ? job->rows : blocks * BLOCK;
    if (!encode_columns(job, (Py_ssize_t)job->trees * inner + 32, at))
        return 0;
    int chunk = CHUNK_BYTES / (inner * 8 + leaves * 4);
    if (chunk < 1)
        chunk = 1;
    transpose_blocks(job, blocks, xt);
    for (Py_ssize_t r = 0; r < blocks * BLOCK; r++)
        sums[r] = job->base;
    for (int t0 = 0; t0 < job->trees; t0 += chunk) {
        const int t1 = t0 + chunk < job->trees ? t0 + chunk : job->trees;
        for (Py_ssize_t b = 0; b < blocks; b++) {
            const float *xb = xt + b * BLOCK * 2 * job->cols;
            __m256 acc[GROUPS];
            for (int g = 0; g < GROUPS; g++)
                acc[g] = _mm256_loadu_ps(sums + b * BLOCK + g * LANES);
            switch (job->depth) {
#define DEPTH(n) case n: block_trees(job, at, xb, t0, t1, n, acc); break;
                DEPTH(1) DEPTH(2) DEPTH(3) DEPTH(4) DEPTH(5) DEPTH(6) DEPTH(7) DEPTH(8)
#undef DEPTH
            default:
                block_trees(job, at, xb, t0, t1, job->depth, acc);
            }
            for (int g = 0; g < GROUPS; g++)
                _mm256_storeu_ps(sums + b * BLOCK + g * LANES, acc[g]);
        }
    }
    memcpy(job->out, sums, (size_t)done * sizeof(float));
    return done;
}

/* Adds lane i of delta to tree[at_i] for every lane i. */
AVX2 static inline void add_lanes(float *tree, __m256i at, __m256 delta)
{
    int32_t to[LANES] __attribute__((aligned(32)));
    float add[LANES] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)to, at);
    _mm256_store_ps(add, delta);
    for (int i = 0; i < LANES; i++)
        tree[to[i]] += add[i];
}

/* The values that the 8 rows of xt (column c of lane i at [c * LANES + i]) read at level
 * 1 <= d < 3, whose nodes' columns are at f: one load per node, picked by the node's bits. */
AVX2 static inline __attribute__((always_inline)) __m256 top_values(const float *xt,
                                                                    const int32_t *f, int d,
                                                                    __m256i k)
{
#define COLUMN(i) _mm256_load_ps(xt + (f[i] & ~MISSING_RIGHT) * LANES)
    const __m256 bit0 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 31));
    const __m256 low = _mm256_blendv_ps(COLUMN(0), COLUMN(1), bit0);
    if (d == 1)
        return low;
    return _mm256_blendv_ps(low, _mm256_blendv_ps(COLUMN(2), COLUMN(3), bit0),
                            _mm256_castsi256_ps(_mm256_slli_epi32(k, 30)));
#undef COLUMN
}

/* Adds one tree's per-column sums for the 8 rows of xt to tree (the same layout, +0.0 on
 * entry), the tree's root not a leaf. The lanes go level by level, each lane's node an index
 * k within the level, a stopped lane keeping its node (and adding +0.0); `at` is the place in
 * tree of each lane's last split column. At levels 1 to 5 the nodes' columns, thresholds, means
 * and stop marks come from register permutes of up to 32 entries from the level's first;
 * a level of fewer than 8 nodes reads past its end, columns and thresholds into later nodes
 * or the 32 spare ones, means only when depth >= 3 and stop marks only 4 bytes at level 2,
 * so both stay inside the tree. Deeper levels gather. */
AVX2 static void tree_sums(const Job *job, const int32_t *f, const float *th, const uint8_t *st,
                           const float *mv, const float *xt, float *tree)
{
    const int depth = job->depth;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i column = _mm256_set1_epi32((int32_t)~MISSING_RIGHT);
    const __m256i zero = _mm256_setzero_si256();
    /* the root: one column for every lane, so one vector add */
    const int32_t root = (int32_t)((uint32_t)f[0] & ~MISSING_RIGHT);
    const __m256 v0 = _mm256_load_ps(xt + root * LANES);
    /* go: all ones for right, that is !(value < threshold), or for NaN the node's bit 31 */
    __m256i go = _mm256_srai_epi32(_mm256_castps_si256(_mm256_blendv_ps(
        _mm256_cmp_ps(v0, _mm256_set1_ps(th[0]), _CMP_NLT_UQ),
        _mm256_castsi256_ps(_mm256_set1_epi32(f[0])), _mm256_cmp_ps(v0, v0, _CMP_UNORD_Q))), 31);
    __m256i k = _mm256_sub_epi32(zero, go);
    __m256i at = _mm256_add_epi32(_mm256_set1_epi32(root * LANES), lane);
    __m256 node = _mm256_blendv_ps(_mm256_set1_ps(mv[1]), _mm256_set1_ps(mv[2]),
                                   _mm256_castsi256_ps(go));
    _mm256_store_ps(tree + root * LANES,
                    _mm256_add_ps(_mm256_load_ps(tree + root * LANES),
                                  _mm256_sub_ps(node, _mm256_set1_ps(mv[0]))));
    __m256i active = depth == 1 ? zero : _mm256_cmpeq_epi32(
        _mm256_blendv_epi8(_mm256_set1_epi32(st[1]), _mm256_set1_epi32(st[2]), go), zero);
    for (int d = 1; d < depth && !_mm256_testz_si256(active, active); d++) {
        const int32_t first = (1 << d) - 1, next = (1 << (d + 1)) - 1;
        __m256i fk;
        __m256 tv;
        if (d < 6) {
            fk = _mm256_castps_si256(level_pick(f + first, INTS, d, k));
            tv = level_pick(th + first, FLOATS, d, k);
        } else {
            fk = _mm256_i32gather_epi32(f + first, k, 4);
            tv = _mm256_i32gather_ps(th + first, k, 4);
        }
        const __m256i to = _mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(fk, column), 3),
                                            lane);
        const __m256 v = d < 3 ? top_values(xt, f + first, d, k)
                               : _mm256_i32gather_ps(xt, to, 4);
        go = _mm256_srai_epi32(_mm256_castps_si256(_mm256_blendv_ps(
            _mm256_cmp_ps(v, tv, _CMP_NLT_UQ), _mm256_castsi256_ps(fk),
            _mm256_cmp_ps(v, v, _CMP_UNORD_Q))), 31);
        k = _mm256_blendv_epi8(k, _mm256_sub_epi32(_mm256_add_epi32(k, k), go), active);
        at = _mm256_blendv_epi8(at, to, active);
        /* the next level's means */
        const __m256 value = d + 1 < 6 && depth >= 3 ? level_pick(mv + next, FLOATS, d + 1, k)
                                                     : _mm256_i32gather_ps(mv + next, k, 4);
        add_lanes(tree, at, _mm256_and_ps(_mm256_sub_ps(value, node),
                                          _mm256_castsi256_ps(active)));
        node = _mm256_blendv_ps(node, value, _mm256_castsi256_ps(active));
        if (d + 1 == depth)
            break;
        /* the next level's stop marks, below the last level: st[k] is the top byte of
         * st[k - 3 .. k] */
        const __m256i marked = d + 1 < 6
            ? _mm256_castps_si256(level_pick(st + next, BYTES, d + 1, k))
            : _mm256_srli_epi32(_mm256_mask_i32gather_epi32(zero, (const int *)(st + next - 3),
                                                            k, active, 1), 24);
        active = _mm256_and_si256(active, _mm256_cmpeq_epi32(marked, zero));
    }
    /* the leaf's value minus its mean: +0.0, unless the mean is infinite */
    const __m256 last = _mm256_sub_ps(node, node);
    if (!_mm256_testz_si256(_mm256_castps_si256(last), _mm256_castps_si256(last)))
        add_lanes(tree, at, last);
}

/* Columns the vector path takes at most: per lane, a tree's sums, the totals and the rows
 * transposed live on the stack, 2 KiB each. Wider rows take the scalar loop. */
#define CONTRIB_COLS 64

/* contributions_rows for the rows in groups of 8, a last group of 3 to 7 rows padded with
 * copies of its last row (fewer cost less on the scalar loop). Each lane adds to its sums the
 * same float32 values in the same order as the scalar loop, and adds every tree's sums to its
 * totals, except that a stopped lane adds +0.0 to a sum and a tree whose root is a leaf adds
 * nothing (the scalar loop adds +0.0s): the same bits, since a float32 sum that starts at
 * +0.0 is never -0.0 and x + +0.0 == x for every other x. The bias is the same for every row.
 * Returns how many rows it did: none for more than CONTRIB_COLS columns. */
AVX2 static Py_ssize_t contributions_avx2(const Job *job, const uint8_t *stop,
                                          const float *mean)
{
    const int32_t inner = (1 << job->depth) - 1, slots = 2 * inner + 1;
    const Py_ssize_t cols = job->cols;
    const Py_ssize_t done = job->rows % LANES > 2 ? job->rows : job->rows / LANES * LANES;
    if (cols > CONTRIB_COLS)
        return 0;
    float bias = 0.0f;
    for (int t = 0; t < job->trees; t++)
        bias += 0.0f + mean[(Py_ssize_t)t * slots];
    bias += job->base;
    float xt[CONTRIB_COLS * LANES] __attribute__((aligned(32)));
    float tree[CONTRIB_COLS * LANES] __attribute__((aligned(32)));
    float total[CONTRIB_COLS * LANES] __attribute__((aligned(32)));
    memset(tree, 0, sizeof tree);
    for (Py_ssize_t r0 = 0; r0 < done; r0 += LANES) {
        const int n = done - r0 < LANES ? (int)(done - r0) : LANES;
        for (int i = 0; i < LANES; i++)
            for (Py_ssize_t c = 0; c < cols; c++)
                xt[c * LANES + i] = job->x[(r0 + (i < n ? i : n - 1)) * cols + c];
        memset(total, 0, (size_t)cols * LANES * sizeof(float));
        for (int t = 0; t < job->trees; t++) {
            const uint8_t *st = stop + (Py_ssize_t)t * inner;
            if (st[0])
                continue;
            tree_sums(job, job->feature + (Py_ssize_t)t * inner,
                      job->threshold + (Py_ssize_t)t * inner, st, mean + (Py_ssize_t)t * slots,
                      xt, tree);
            for (Py_ssize_t c = 0; c < cols; c++) {
                float *tc = tree + c * LANES, *sum = total + c * LANES;
                _mm256_store_ps(sum, _mm256_add_ps(_mm256_load_ps(sum), _mm256_load_ps(tc)));
                _mm256_store_ps(tc, _mm256_setzero_ps());
            }
        }
        for (int i = 0; i < n; i++) {
            float *out = job->out + (r0 + i) * (cols + 1);
            for (Py_ssize_t c = 0; c < cols; c++)
                out[c] = total[c * LANES + i];
            out[cols] = bias;
        }
    }
    return done;
}

static int have_avx2(void) { return __builtin_cpu_supports("avx2"); }
#else
static Py_ssize_t margins_avx2(const Job *job, float *xt, int32_t *at, float *sums)
{
    (void)job;
    (void)xt;
    (void)at;
    (void)sums;
    return 0;
}
static Py_ssize_t contributions_avx2(const Job *job, const uint8_t *stop, const float *mean)
{
    (void)job;
    (void)stop;
    (void)mean;
    return 0;
}
static int have_avx2(void) { return 0; }
#endif

static void sigmoid(float *v, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        v[i] = 1.0f / (1.0f + expf(-v[i]));
}

static int check(int ok, const char *message)
{
    if (!ok)
        PyErr_SetString(PyExc_ValueError, message);
    return ok;
}

/* What both entry points check before releasing the GIL, then `job` filled in: x holds rows
 * of `cols` float32, the nodes of `trees` trees (plus the vector path's 32 spare entries: it
 * reads 32 nodes from a level's first one) name columns of x, and out holds `width` floats
 * per row. */
static int prepare(Job *job, Py_buffer *x, Py_ssize_t cols, Py_buffer *feature,
                   Py_buffer *threshold, int depth, Py_ssize_t trees, float base,
                   Py_buffer *out, Py_ssize_t width)
{
    if (!check(depth >= 1 && depth <= 16, "depth must be 1 to 16")
        || !check(cols >= 1 && cols < (1 << 24), "cols out of range")
        || !check(x->len % (Py_ssize_t)(cols * sizeof(float)) == 0,
                  "x is not rows x cols float32"))
        return 0;
    const Py_ssize_t nodes = trees * (((Py_ssize_t)1 << depth) - 1) + 32;
    job->rows = x->len / (Py_ssize_t)(cols * sizeof(float));
    if (!check(feature->len == nodes * (Py_ssize_t)sizeof(int32_t), "feature size")
        || !check(threshold->len == nodes * (Py_ssize_t)sizeof(float), "threshold size")
        || !check(out->len == job->rows * width * (Py_ssize_t)sizeof(float), "out size"))
        return 0;
    const int32_t *f = feature->buf;
    for (Py_ssize_t i = 0; i < nodes; i++)
        if (!check(((uint32_t)f[i] & ~MISSING_RIGHT) < (uint32_t)cols,
                   "a node's column is out of range"))
            return 0;
    job->x = x->buf;
    job->cols = cols;
    job->feature = feature->buf;
    job->threshold = threshold->buf;
    job->depth = depth;
    job->trees = (int)trees;
    job->base = base;
    job->out = out->buf;
    return 1;
}

static int valid_depth(int depth) { return depth >= 1 && depth <= 16 ? depth : 1; }

PyDoc_STRVAR(score_doc,
"score(x, cols, feature, threshold, leaf, depth, base, out, logistic, simd)\n\n"
"Margins (or, with logistic, probabilities) of the rows of the C-contiguous float32 buffer x\n"
"(cols per row) into the float32 buffer out. The GIL is released while scoring.");

static PyObject *score(PyObject *self, PyObject *args)
{
    Py_buffer x, feature, threshold, leaf, out;
    Py_ssize_t cols;
    int depth, logistic, simd;
    float base;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*ifw*pp", &x, &cols, &feature, &threshold, &leaf,
                          &depth, &base, &out, &logistic, &simd))
        return NULL;
    Job job = {0};
    const Py_ssize_t leaves = (Py_ssize_t)1 << valid_depth(depth);
    const Py_ssize_t trees = leaf.len / (leaves * (Py_ssize_t)sizeof(float));
    int ok = prepare(&job, &x, cols, &feature, &threshold, depth, trees, base, &out, 1)
        && check(leaf.len == trees * leaves * (Py_ssize_t)sizeof(float), "leaf size");
    if (ok) {
        job.leaf = leaf.buf;
        /* the vector path's room: every node's column offset, the blocks transposed, their
         * margins */
        const size_t nodes = (size_t)(feature.len / (Py_ssize_t)sizeof(int32_t));
        const size_t padded = (size_t)(vector_blocks(job.rows) * BLOCK);
        int32_t *at = simd && have_avx2() && padded > 0
            ? PyMem_RawMalloc((nodes + padded * (size_t)(2 * job.cols + 1)) * sizeof(float))
            : NULL;
        Py_BEGIN_ALLOW_THREADS
        Py_ssize_t done = 0;
        if (at != NULL) {
            float *xt = (float *)(at + nodes);
            done = margins_avx2(&job, xt, at, xt + padded * (size_t)(2 * job.cols));
        }
        margins_scalar(&job, done);
        if (logistic)
            sigmoid(job.out, job.rows);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(at);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&feature);
    PyBuffer_Release(&threshold);
    PyBuffer_Release(&leaf);
    PyBuffer_Release(&out);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

/* Saabas contributions as XGBoost's approx_contribs computes them, for the rows from r0 on:
 * per tree, the bias gets the root's mean value, each step along the row's path gives its
 * split column the change in the node mean (summed per tree, then added to the row's totals),
 * and the base margin is added to the bias last. `stop` marks slots holding a leaf above the
 * last level. */
static void contributions_rows(const Job *job, Py_ssize_t r0, const uint8_t *stop,
                               const float *mean, float *tree)
{
    const int32_t inner = (1 << job->depth) - 1, slots = (1 << (job->depth + 1)) - 1;
    const Py_ssize_t width = job->cols + 1;
    for (Py_ssize_t r = r0; r < job->rows; r++) {
        const float *row = job->x + r * job->cols;
        float *total = job->out + r * width;
        for (Py_ssize_t c = 0; c < width; c++)
            total[c] = 0.0f;
        for (int t = 0; t < job->trees; t++) {
            const int32_t *f = job->feature + (Py_ssize_t)t * inner;
            const float *th = job->threshold + (Py_ssize_t)t * inner;
            const uint8_t *st = stop + (Py_ssize_t)t * inner;
            const float *mv = mean + (Py_ssize_t)t * slots;
            for (Py_ssize_t c = 0; c < width; c++)
                tree[c] = 0.0f;
            float node_value = mv[0];
            tree[job->cols] += node_value;
            if (!st[0]) {
                int32_t k = 0;
                uint32_t split = 0;
                while (k < inner && !st[k]) {
                    uint32_t fk = (uint32_t)f[k];
                    split = fk & ~MISSING_RIGHT;
                    float v = row[split];
                    int32_t right = isnan(v) ? (int32_t)(fk >> 31) : !(v < th[k]);
                    k = 2 * k + 1 + right;
                    float new_value = mv[k];
                    tree[split] += new_value - node_value;
                    node_value = new_value;
                }
                tree[split] += mv[k] - node_value; /* the leaf's value minus its mean: 0 */
            }
            for (Py_ssize_t c = 0; c < width; c++)
                total[c] += tree[c];
        }
        total[job->cols] += job->base;
    }
}

PyDoc_STRVAR(contributions_doc,
"contributions(x, cols, feature, threshold, stop, mean, depth, base, out)\n\n"
"Saabas contributions of the rows of x into out, (rows, cols + 1) float32, bias last.");

static PyObject *contributions(PyObject *self, PyObject *args)
{
    Py_buffer x, feature, threshold, stop, mean, out;
    Py_ssize_t cols;
    int depth;
    float base;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*y*ifw*", &x, &cols, &feature, &threshold, &stop,
                          &mean, &depth, &base, &out))
        return NULL;
    Job job = {0};
    float *tree = NULL;
    const Py_ssize_t inner = ((Py_ssize_t)1 << valid_depth(depth)) - 1, slots = 2 * inner + 1;
    const Py_ssize_t trees = mean.len / (slots * (Py_ssize_t)sizeof(float));
    int ok = prepare(&job, &x, cols, &feature, &threshold, depth, trees, base, &out, cols + 1)
        && check(mean.len == trees * slots * (Py_ssize_t)sizeof(float), "mean size")
        && check(stop.len == trees * inner, "stop size");
    if (ok && !(tree = PyMem_Malloc((size_t)(cols + 1) * sizeof(float)))) {
        PyErr_NoMemory();
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        const Py_ssize_t done = have_avx2() ? contributions_avx2(&job, stop.buf, mean.buf) : 0;
        contributions_rows(&job, done, stop.buf, mean.buf, tree);
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(tree);
    PyBuffer_Release(&x);
    PyBuffer_Release(&feature);
    PyBuffer_Release(&threshold);
    PyBuffer_Release(&stop);
    PyBuffer_Release(&mean);
    PyBuffer_Release(&out);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *simd_available(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(have_avx2());
}

static PyMethodDef methods[] = {
    {"score", score, METH_VARARGS, score_doc},
    {"contributions", contributions, METH_VARARGS, contributions_doc},
    {"simd_available", simd_available, METH_NOARGS, "True when the AVX2 path runs here."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_forest",
    .m_doc = "Bit-exact XGBoost tree ensemble scoring.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__forest(void) { return PyModule_Create(&module); }
