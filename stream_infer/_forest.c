/* Tree ensemble scoring for stream_infer.adapters.forest: the same float32 operations, in the
 * same order, as XGBoost's CPU predictor, so margins and probabilities are bit-for-bit equal.
 *
 * A forest is `trees` complete binary trees of `depth` levels in heap order (children of node
 * k are 2k+1 and 2k+2): per inner node a column (bit 31 set when a missing value goes right)
 * and a float32 threshold, per tree 2^depth leaf values. A row goes right when
 * !(value < threshold), or, for NaN, when bit 31 says so; XGBoost's rule. Each row's margin
 * starts at `base` and adds the trees' leaves in tree order, in float32.
 *
 * On x86-64 with AVX2, blocks of 64 rows go 8 to a vector; the top six levels' nodes are
 * picked with register permutes instead of memory gathers, and the top four levels (at most 8
 * nodes) read the rows' values with plain loads from a column-major copy of the block,
 * blended by the node's bits, instead of gathering them. Trees are visited in chunks that
 * fit the L1 cache. Everything else (other CPUs, the last rows) takes the scalar loop, which
 * computes the same thing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2")))

/* The columns and thresholds of the nodes `node` (absolute indexes) at level d. */
AVX2 static inline void level_nodes(const int32_t *f, const float *th, int d, __m256i node,
                                    __m256i *fv, __m256 *tv)
{
    if (d > 5) {
        *fv = _mm256_i32gather_epi32((const int *)f, node, 4);
        *tv = _mm256_i32gather_ps(th, node, 4);
        return;
    }
    const int32_t first = (1 << d) - 1;
    const int32_t *fl = f + first;
    const float *tl = th + first;
    const __m256i k = _mm256_sub_epi32(node, _mm256_set1_epi32(first));
    *fv = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)fl), k);
    *tv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tl), k);
    if (d <= 3)
        return;
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28));
    __m256 f1 = _mm256_castsi256_ps(
        _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(fl + 8)), k));
    __m256 t1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tl + 8), k);
    __m256 fs = _mm256_blendv_ps(_mm256_castsi256_ps(*fv), f1, bit3);
    __m256 ts = _mm256_blendv_ps(*tv, t1, bit3);
    if (d == 5) {
        const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 27));
        __m256 f2 = _mm256_castsi256_ps(
            _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(fl + 16)), k));
        __m256 f3 = _mm256_castsi256_ps(
            _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(fl + 24)), k));
        __m256 t2 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tl + 16), k);
        __m256 t3 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tl + 24), k);
        fs = _mm256_blendv_ps(fs, _mm256_blendv_ps(f2, f3, bit3), bit4);
        ts = _mm256_blendv_ps(ts, _mm256_blendv_ps(t2, t3, bit3), bit4);
    }
    *fv = _mm256_castps_si256(fs);
    *tv = ts;
}

/* Each 64-row block of x, column by column (column c of block b at xt + b*64*cols + c*64),
 * so that a level whose nodes all read one of a few columns loads them instead of gathering. */
AVX2 static void transpose_blocks(const Job *job, Py_ssize_t full, float *xt)
{
    for (Py_ssize_t r0 = 0; r0 < full; r0 += BLOCK) {
        const float *xb = job->x + r0 * job->cols;
        float *tb = xt + r0 * job->cols;
        for (Py_ssize_t i = 0; i < BLOCK; i++)
            for (Py_ssize_t c = 0; c < job->cols; c++)
                tb[c * BLOCK + i] = xb[i * job->cols + c];
    }
}

/* The values that 8 rows (at xg, in a transposed block) read at level d < 4, where a level
 * has at most 8 nodes: one load per node, picked by the node's bits. */
AVX2 static inline __m256 top_level_values(const float *xg, const int32_t *f, int d,
                                           __m256i node)
{
    const int32_t first = (1 << d) - 1;
    const __m256i k = _mm256_sub_epi32(node, _mm256_set1_epi32(first));
#define COLUMN(i) _mm256_loadu_ps(xg + (Py_ssize_t)(f[first + (i)] & 0x7fffffff) * BLOCK)
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

/* Whole 64-row blocks (xt: the blocks transposed); returns how many rows it scored. */
AVX2 static Py_ssize_t margins_avx2(const Job *job, float *xt)
{
    const int32_t inner = (1 << job->depth) - 1, leaves = 1 << job->depth;
    const Py_ssize_t full = job->rows / BLOCK * BLOCK;
    int chunk = CHUNK_BYTES / (inner * 8 + leaves * 4);
    if (chunk < 1)
        chunk = 1;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i one = _mm256_set1_epi32(1), column = _mm256_set1_epi32(0x7fffffff);
    transpose_blocks(job, full, xt);
    for (Py_ssize_t r = 0; r < full; r++)
        job->out[r] = job->base;
    for (int t0 = 0; t0 < job->trees; t0 += chunk) {
        const int t1 = t0 + chunk < job->trees ? t0 + chunk : job->trees;
        for (Py_ssize_t r0 = 0; r0 < full; r0 += BLOCK) {
            const float *xb = xt + r0 * job->cols;
            __m256i offset[GROUPS];
            __m256 acc[GROUPS];
            for (int g = 0; g < GROUPS; g++) {
                offset[g] = _mm256_add_epi32(lane, _mm256_set1_epi32(g * LANES));
                acc[g] = _mm256_loadu_ps(job->out + r0 + g * LANES);
            }
            for (int t = t0; t < t1; t++) {
                const int32_t *f = job->feature + (Py_ssize_t)t * inner;
                const float *th = job->threshold + (Py_ssize_t)t * inner;
                const float *lf = job->leaf + (Py_ssize_t)t * leaves - inner;
                __m256i node[GROUPS];
                for (int g = 0; g < GROUPS; g++)
                    node[g] = _mm256_setzero_si256();
                for (int d = 0; d < job->depth; d++) {
                    for (int g = 0; g < GROUPS; g++) {
                        __m256i fv;
                        __m256 tv, v;
                        level_nodes(f, th, d, node[g], &fv, &tv);
                        if (d < 4) {
                            v = top_level_values(xb + g * LANES, f, d, node[g]);
                        } else {
                            __m256i at = _mm256_add_epi32(
                                offset[g], _mm256_slli_epi32(_mm256_and_si256(fv, column), 6));
                            v = _mm256_i32gather_ps(xb, at, 4);
                        }
                        __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, tv, _CMP_GE_OQ));
                        __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                        __m256i right = _mm256_or_si256(
                            ge, _mm256_and_si256(nan, _mm256_srai_epi32(fv, 31)));
                        node[g] = _mm256_sub_epi32(
                            _mm256_add_epi32(_mm256_add_epi32(node[g], node[g]), one), right);
                    }
                }
                for (int g = 0; g < GROUPS; g++)
                    acc[g] = _mm256_add_ps(acc[g], _mm256_i32gather_ps(lf, node[g], 4));
            }
            for (int g = 0; g < GROUPS; g++)
                _mm256_storeu_ps(job->out + r0 + g * LANES, acc[g]);
        }
    }
    return full;
}

static int have_avx2(void) { return __builtin_cpu_supports("avx2"); }
#else
static Py_ssize_t margins_avx2(const Job *job, float *xt) { (void)job; (void)xt; return 0; }
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
        float *xt = simd && have_avx2() && job.rows >= BLOCK
            ? PyMem_RawMalloc((size_t)(job.rows / BLOCK * BLOCK * job.cols) * sizeof(float))
            : NULL;
        Py_BEGIN_ALLOW_THREADS
        Py_ssize_t done = xt != NULL ? margins_avx2(&job, xt) : 0;
        margins_scalar(&job, done);
        if (logistic)
            sigmoid(job.out, job.rows);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(xt);
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

/* Saabas contributions as XGBoost's approx_contribs computes them: per tree, the bias gets
 * the root's mean value, each step along the row's path gives its split column the change in
 * the node mean (summed per tree, then added to the row's totals), and the base margin is
 * added to the bias last. `stop` marks slots holding a leaf above the last level. */
static void contributions_rows(const Job *job, const uint8_t *stop, const float *mean,
                               float *tree)
{
    const int32_t inner = (1 << job->depth) - 1, slots = (1 << (job->depth + 1)) - 1;
    const Py_ssize_t width = job->cols + 1;
    for (Py_ssize_t r = 0; r < job->rows; r++) {
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
        contributions_rows(&job, stop.buf, mean.buf, tree);
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
