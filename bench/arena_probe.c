/* bench/arena.py's probe compiled: one window group's state as arrays, events appended in
 * place one at a time, every window found by binary search within the entity's segment.
 *
 * No Python object is kept per entity or per row. Entity keys and event ids are kept as
 * UTF-8 bytes in pools; the entity codes and the directory of kept events (id -> entity
 * and time) are open-addressing hash tables over those bytes. A batch applied can be
 * written out as an entry (``apply(..., entry=True)``) that another copy of the state
 * keeps with ``replay(entry)``: its labels, then its rows with the features they were
 * served, read in place without a Python object per row (bench/group_log.py's copies).
 *
 * The same cases as the numpy probe and no others: each entity's events in time order
 * without ties, labels for kept events, aggregates count, mean (of one field) and rate.
 * Sums follow numpy's add.reduceat (the first value, plus numpy's pairwise sum of the
 * rest), so the values are WindowEngine's bit for bit. Nothing is ever removed from the
 * pools or the directory, and nothing compacts the arena. Built by bench/arena.py with the
 * system's C compiler; not part of the package.
 *
 * An entry, all integers and floats 8 bytes and little-endian:
 *   labels m, rows n, width w;
 *   m stamps (label_time, label); n times; n values; n * w served features;
 *   three blobs, each its byte length then its items each followed by byte 0xff:
 *   the labels' event ids, the rows' entity keys, the rows' event ids. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { COUNT = 0, MEAN = 1, RATE = 2 };
#define END 0xff

typedef struct { const char *bytes; Py_ssize_t size; } Text;

typedef struct { char *bytes; int64_t used, room; } Pool;

typedef struct {  /* an entry of a hash table: an entity's code (-1: free), and the size
                     of the text it was found by */
    uint64_t hash;
    int32_t code, size;
} Head;

typedef Head Named;  /* entity key -> code */

typedef struct {  /* event id -> a kept event: its entity's code, its time, its id's place
                     in the ids pool */
    Head head;
    int64_t time, id_at;
} Kept;

typedef struct {
    PyObject_HEAD
    int64_t delay, horizon, lengths[8], mark;
    int nlengths, kinds[8], nkinds, width, uses_labels, marked;
    Pool keys, id_text;
    Named *names;          /* entity key -> code */
    int64_t names_size;
    Kept *directory;       /* event id -> entity, time */
    int64_t directory_size, directory_used;
    int64_t *key_at;                /* per entity: where its key begins in the pool */
    int64_t *start, *length, *cap;  /* per entity: rows [start, start + length) of the
                                       slots [start, start + cap) */
    Py_ssize_t entities, entities_room;
    int64_t *times, *id_at;
    int32_t *id_size;
    double *values, *fraud, *label_time, *served;
    Py_ssize_t top, room;
} Group;

static int grow(void **p, Py_ssize_t count, size_t item) {
    void *q = PyMem_Realloc(*p, (size_t)count * item);
    if (q == NULL) { PyErr_NoMemory(); return -1; }
    *p = q;
    return 0;
}

static uint64_t hash_text(Text t) {  /* FNV-1a, then a final mix */
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < t.size; i++) h = (h ^ (unsigned char)t.bytes[i]) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static int64_t pool_add(Pool *p, Text t) {  /* where t now lies in the pool, or -1 */
    if (p->used + t.size > p->room) {
        int64_t room = p->room * 2 > p->used + t.size ? p->room * 2 : p->used + t.size + 4096;
        if (grow((void **)&p->bytes, room, 1) < 0) return -1;
        p->room = room;
    }
    memcpy(p->bytes + p->used, t.bytes, (size_t)t.size);
    p->used += t.size;
    return p->used - t.size;
}

static int same(const Pool *p, int64_t at, int64_t size, Text t) {
    return size == t.size && memcmp(p->bytes + at, t.bytes, (size_t)t.size) == 0;
}

static int room_for(Group *g, Py_ssize_t slots) {  /* slots past top, and one spare */
    if (g->top + slots < g->room) return 0;
    Py_ssize_t room = g->room * 2 > g->top + slots + 1 ? g->room * 2 : g->top + slots + 1;
    if (grow((void **)&g->times, room, 8) || grow((void **)&g->values, room, 8)
        || grow((void **)&g->fraud, room, 8) || grow((void **)&g->label_time, room, 8)
        || grow((void **)&g->served, room * g->width, 8) || grow((void **)&g->id_at, room, 8)
        || grow((void **)&g->id_size, room, 4)) return -1;
    g->room = room;
    return 0;
}

static int rehash(void **table, int64_t *size, int64_t first, size_t item) {
    /* A hash table of ``item``-byte entries (each a Head first) at twice its size, or at
     * ``first`` entries if it has none; linear probing. */
    int64_t grown = *size ? 2 * *size : first;
    char *fresh = PyMem_Malloc((size_t)grown * item), *old = *table;
    if (fresh == NULL) { PyErr_NoMemory(); return -1; }
    for (int64_t i = 0; i < grown; i++) ((Head *)(fresh + i * item))->code = -1;
    for (int64_t i = 0; i < *size; i++) {
        Head *entry = (Head *)(old + i * item);
        if (entry->code < 0) continue;
        int64_t at = (int64_t)(entry->hash & (uint64_t)(grown - 1));
        while (((Head *)(fresh + at * item))->code >= 0) at = (at + 1) & (grown - 1);
        memcpy(fresh + at * item, entry, item);
    }
    PyMem_Free(old);
    *table = fresh, *size = grown;
    return 0;
}

static Py_ssize_t entity(Group *g, Text key) {  /* its code, a new entity numbered here */
    if (2 * (g->entities + 1) > g->names_size
        && rehash((void **)&g->names, &g->names_size, 4096, sizeof(Named)) < 0) return -1;
    uint64_t hash = hash_text(key);
    int64_t at = (int64_t)(hash & (uint64_t)(g->names_size - 1));
    for (;; at = (at + 1) & (g->names_size - 1)) {
        int64_t code = g->names[at].code;
        if (code < 0) break;
        if (g->names[at].hash == hash && same(&g->keys, g->key_at[code], g->names[at].size, key))
            return code;
    }
    Py_ssize_t code = g->entities;
    if (code == g->entities_room) {
        Py_ssize_t room = code ? 2 * code : 1024;
        if (grow((void **)&g->start, room, 8) || grow((void **)&g->length, room, 8)
            || grow((void **)&g->cap, room, 8) || grow((void **)&g->key_at, room, 8)) return -1;
        g->entities_room = room;
    }
    if ((g->key_at[code] = pool_add(&g->keys, key)) < 0) return -1;
    g->start[code] = g->length[code] = g->cap[code] = 0;
    g->names[at] = (Named){hash, (int32_t)code, (int32_t)key.size};
    g->entities++;
    return code;
}

static Kept *kept(Group *g, Text id, uint64_t hash) {  /* its slot: taken, or the free one */
    int64_t at = (int64_t)(hash & (uint64_t)(g->directory_size - 1));
    for (;; at = (at + 1) & (g->directory_size - 1)) {
        Kept *k = &g->directory[at];
        if (k->head.code < 0
            || (k->head.hash == hash && same(&g->id_text, k->id_at, k->head.size, id)))
            return k;
    }
}

static int make_room(Group *g, Py_ssize_t code) {  /* move a full segment to the end */
    int64_t s = g->start[code], n = g->length[code];
    int64_t cap = 2 * (n + 1) > 4 ? 2 * (n + 1) : 4;
    if (room_for(g, cap) < 0) return -1;
    int64_t to = g->top;
    memmove(g->times + to, g->times + s, (size_t)n * 8);
    memmove(g->values + to, g->values + s, (size_t)n * 8);
    memmove(g->fraud + to, g->fraud + s, (size_t)n * 8);
    memmove(g->label_time + to, g->label_time + s, (size_t)n * 8);
    memmove(g->served + to * g->width, g->served + s * g->width, (size_t)(n * g->width) * 8);
    memmove(g->id_at + to, g->id_at + s, (size_t)n * 8);
    memmove(g->id_size + to, g->id_size + s, (size_t)n * 4);
    g->start[code] = to;
    g->cap[code] = cap;
    g->top += cap;
    return 0;
}

static int64_t after(const int64_t *times, int64_t lo, int64_t hi, int64_t t) {
    while (lo < hi) {  /* the first index in [lo, hi) whose time is > t */
        int64_t mid = lo + (hi - lo) / 2;
        if (times[mid] <= t) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static double pairwise(const double *a, int64_t n) {  /* numpy's pairwise sum */
    if (n < 8) {
        double res = 0.;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        int64_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

static double reduced(const double *a, int64_t lo, int64_t hi) {  /* add.reduceat's sum */
    if (hi <= lo) return 0.;
    double sum = a[lo];
    if (hi - lo > 1) sum += pairwise(a + lo + 1, hi - lo - 1);
    return sum;
}

static int64_t keep(Group *g, Text key, int64_t time, Text id, double value,
                    int64_t horizon, Py_ssize_t *entity_code) {
    /* Keep one event: its entity's rows trimmed to the horizon, the event appended (its
     * segment moved if full), the directory told; its slot, or -1 with an exception. */
    Py_ssize_t code = entity(g, key);
    if (code < 0) return -1;
    *entity_code = code;
    int64_t s = g->start[code], len = g->length[code];
    while (len > 0 && g->times[s] <= horizon) s++, len--;  /* no window reads them again */
    g->cap[code] -= s - g->start[code];
    g->start[code] = s, g->length[code] = len;
    if (len > 0 && g->times[s + len - 1] >= time) {
        PyErr_SetString(PyExc_ValueError, "an entity's events out of time order, or tied");
        return -1;
    }
    if (len + 1 > g->cap[code] && make_room(g, code) < 0) return -1;
    if (2 * (g->directory_used + 1) > g->directory_size
        && rehash((void **)&g->directory, &g->directory_size, 1 << 16, sizeof(Kept)) < 0)
        return -1;
    int64_t j = g->start[code] + len, at = pool_add(&g->id_text, id);
    if (at < 0) return -1;
    g->times[j] = time;
    g->values[j] = value;
    g->fraud[j] = 0.;
    g->label_time[j] = -INFINITY;
    g->id_at[j] = at, g->id_size[j] = (int32_t)id.size;
    g->length[code] = len + 1;
    uint64_t hash = hash_text(id);
    Kept *k = kept(g, id, hash);
    g->directory_used += k->head.code < 0;
    *k = (Kept){{hash, (int32_t)code, (int32_t)id.size}, time, at};
    return j;
}

static void features(Group *g, Py_ssize_t code, int64_t j) {
    /* The window features of the event at slot j, over its segment's rows up to it, into
     * its served features. */
    int64_t s = g->start[code];
    int column = 0;
    int64_t t = g->times[j];
    for (int k = 0; k < g->nlengths; k++) {
        int64_t lo = after(g->times, s, j + 1, t - g->delay - g->lengths[k]);
        int64_t hi = g->delay ? after(g->times, lo, j + 1, t - g->delay) : j + 1;
        double count = (double)(hi - lo);
        for (int a = 0; a < g->nkinds; a++, column++) {
            double x;
            if (g->kinds[a] == COUNT) x = count;
            else if (g->kinds[a] == MEAN) x = hi > lo ? reduced(g->values, lo, hi) / count : NAN;
            else x = hi > lo ? reduced(g->fraud, lo, hi) / count : 0.;
            g->served[j * g->width + column] = x;
        }
    }
}

static int label(Group *g, Text id, double when, double fraud) {
    /* Apply a label to its kept event, unless that lies at or before the horizon or holds
     * an equal or newer label; -1 with an exception if the event is not kept. */
    Kept *k = kept(g, id, hash_text(id));
    if (k->head.code < 0) {
        PyErr_SetString(PyExc_ValueError, "a label for an event not kept: unsupported");
        return -1;
    }
    if (k->time <= g->mark - g->horizon) return 0;
    int64_t s = g->start[k->head.code], end = s + g->length[k->head.code];
    int64_t j = after(g->times, s, end, k->time - 1);
    if (j >= end || !same(&g->id_text, g->id_at[j], g->id_size[j], id)) {
        PyErr_SetString(PyExc_ValueError, "a label's event not where the directory says");
        return -1;
    }
    if (when < g->label_time[j] || (when == g->label_time[j] && fraud <= g->fraud[j]))
        return 0;
    g->label_time[j] = when;
    g->fraud[j] = fraud;
    return 0;
}

static int label_all(Group *g, const Text *ids, const double *stamps, Py_ssize_t m) {
    if (!g->uses_labels || m == 0) return 0;
    if (!g->marked) {
        PyErr_SetString(PyExc_ValueError, "labels before any event: unsupported");
        return -1;
    }
    for (Py_ssize_t i = 0; i < m; i++)
        if (label(g, ids[i], stamps[2 * i], stamps[2 * i + 1]) < 0) return -1;
    return 0;
}

typedef struct {  /* a batch as the C code reads it, from Python's lists or an entry */
    Py_ssize_t m, n;          /* labels, rows */
    const double *stamps, *values;
    const double *served;     /* the features served, or NULL: to compute */
    const int64_t *times;
    Text *text;               /* the labels' ids, then the keys, then the ids */
} Batch;

static int take(Group *g, const Batch *b, double *out) {
    /* Apply the batch's labels, then keep its rows: with the features served if it carries
     * them, else computed; each row's features also into out, unless it is NULL. */
    Text *keys = b->text + b->m, *ids = keys + b->n;
    if (label_all(g, b->text, b->stamps, b->m) < 0) return -1;
    for (Py_ssize_t i = 0; i < b->n; i++)
        if (!g->marked || b->times[i] > g->mark) g->mark = b->times[i], g->marked = 1;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        Py_ssize_t code;
        int64_t j = keep(g, keys[i], b->times[i], ids[i], b->values[i], g->mark - g->horizon,
                         &code);
        if (j < 0) return -1;
        if (b->served != NULL)
            memcpy(g->served + j * g->width, b->served + i * g->width, (size_t)g->width * 8);
        else
            features(g, code, j);
        if (out != NULL)
            memcpy(out + i * g->width, g->served + j * g->width, (size_t)g->width * 8);
    }
    return 0;
}

static Py_ssize_t blob_size(const Text *items, Py_ssize_t n) {
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) size += items[i].size + 1;
    return size;
}

static char *put(char *at, const void *from, size_t size) {
    if (size > 0) memcpy(at, from, size);  /* from may be NULL when size is 0 */
    return at + size;
}

static char *put_blob(char *at, const Text *items, Py_ssize_t n) {
    int64_t size = blob_size(items, n);
    at = put(at, &size, 8);
    for (Py_ssize_t i = 0; i < n; i++) {
        at = put(at, items[i].bytes, (size_t)items[i].size);
        *at++ = (char)END;
    }
    return at;
}

static PyObject *entry(Group *g, const Batch *b) {
    /* The batch's entry: its labels (a group with a rate) and its rows, with the features
     * served if it carries them (an entry of results), else without (of inputs). */
    Py_ssize_t m = g->uses_labels ? b->m : 0, n = b->n;
    int64_t width = b->served != NULL ? g->width : 0, head[3] = {m, n, width};
    Py_ssize_t size = 24 + 16 * m + 8 * n * (2 + width) + 24 + blob_size(b->text, m)
                      + blob_size(b->text + b->m, 2 * n);
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, size);
    if (bytes == NULL) return NULL;
    char *at = PyBytes_AS_STRING(bytes);
    at = put(at, head, 24);
    at = put(at, b->stamps, (size_t)(16 * m));
    at = put(at, b->times, (size_t)(8 * n));
    at = put(at, b->values, (size_t)(8 * n));
    at = put(at, b->served, (size_t)(8 * n * width));
    at = put_blob(at, b->text, m);
    at = put_blob(at, b->text + b->m, n);
    put_blob(at, b->text + b->m + n, n);
    return bytes;
}

static int texts(PyObject *list, Text *out) {  /* a list of str as UTF-8, not copied */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if ((out[i].bytes = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(list, i),
                                                    &out[i].size)) == NULL) return -1;
    return 0;
}

typedef struct { Py_buffer stamps, times, values; } Buffers;  /* obj NULL: not held */

static int from_lists(PyObject *const lists[3], PyObject *const arrays[3], Batch *b,
                      Buffers *held) {
    /* A batch from Python's lists (labels' ids, keys, ids) and arrays (stamps, times,
     * values); what it holds is released by release(), whatever this returns. */
    Py_buffer *buffers[3] = {&held->stamps, &held->times, &held->values};
    for (int k = 0; k < 3; k++)
        if (PyObject_GetBuffer(arrays[k], buffers[k], PyBUF_SIMPLE) < 0) return -1;
    b->m = PyList_GET_SIZE(lists[0]), b->n = PyList_GET_SIZE(lists[1]);
    b->stamps = held->stamps.buf, b->times = held->times.buf, b->values = held->values.buf;
    b->served = NULL;
    if (PyList_GET_SIZE(lists[2]) != b->n || held->stamps.len < 16 * b->m
        || held->times.len < 8 * b->n || held->values.len < 8 * b->n) {
        PyErr_SetString(PyExc_ValueError, "the batch's lists and arrays disagree in size");
        return -1;
    }
    if ((b->text = PyMem_Malloc(sizeof(Text) * (size_t)(b->m + 2 * b->n + 1))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (texts(lists[0], b->text) < 0 || texts(lists[1], b->text + b->m) < 0
        || texts(lists[2], b->text + b->m + b->n) < 0) return -1;
    return 0;
}

static void release(Batch *b, Buffers *held) {
    PyMem_Free(b->text);
    Py_buffer *buffers[3] = {&held->stamps, &held->times, &held->values};
    for (int k = 0; k < 3; k++)
        if (buffers[k]->obj != NULL) PyBuffer_Release(buffers[k]);
}

#define LISTS "O!OO!OO!O"  /* label_ids, stamps, keys, times, ids, values */

static PyObject *Group_apply(Group *g, PyObject *args) {
    /* apply(label_ids, stamps, keys, times, ids, values, out, entry) */
    PyObject *lists[3], *arrays[3], *result = NULL;
    Py_buffer out;
    int want_entry;
    if (!PyArg_ParseTuple(args, LISTS "w*p", &PyList_Type, &lists[0], &arrays[0],
                          &PyList_Type, &lists[1], &arrays[1], &PyList_Type, &lists[2],
                          &arrays[2], &out, &want_entry)) return NULL;
    Batch b = {0};
    Buffers held = {0};
    if (from_lists(lists, arrays, &b, &held) < 0) goto done;
    if (out.len < 8 * b.n * g->width) {
        PyErr_SetString(PyExc_ValueError, "out is too small for the batch's features");
        goto done;
    }
    if (take(g, &b, out.buf) < 0) goto done;
    b.served = out.buf;
    result = want_entry ? entry(g, &b) : Py_NewRef(Py_None);
done:
    release(&b, &held);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *Group_inputs(Group *g, PyObject *args) {
    /* inputs(label_ids, stamps, keys, times, ids, values): the batch's entry of inputs */
    PyObject *lists[3], *arrays[3], *result = NULL;
    if (!PyArg_ParseTuple(args, LISTS, &PyList_Type, &lists[0], &arrays[0], &PyList_Type,
                          &lists[1], &arrays[1], &PyList_Type, &lists[2], &arrays[2]))
        return NULL;
    Batch b = {0};
    Buffers held = {0};
    if (from_lists(lists, arrays, &b, &held) == 0) result = entry(g, &b);
    release(&b, &held);
    return result;
}

static int read_blob(const char **at, const char *end, Text *items, Py_ssize_t n) {
    int64_t size;
    if (end - *at < 8) return -1;
    memcpy(&size, *at, 8);
    const char *item = *at + 8, *stop = item + size;
    if (size < 0 || stop > end) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *next = memchr(item, END, (size_t)(stop - item));
        if (next == NULL) return -1;
        items[i] = (Text){item, next - item};
        item = next + 1;
    }
    *at = stop;
    return item == stop ? 0 : -1;
}

static int from_entry(Group *g, const Py_buffer *buffer, Batch *b) {
    /* A batch read in place from an entry (the arrays lie at multiples of 8 from its
     * start: aligned in a bytes object). */
    const char *at = buffer->buf, *end = at + buffer->len;
    int64_t head[3];
    if (buffer->len < 24) goto malformed;
    memcpy(head, at, 24);
    b->m = head[0], b->n = head[1];
    if (b->m < 0 || b->n < 0 || (head[2] != g->width && head[2] != 0)
        || buffer->len < 24 + 16 * b->m + 8 * b->n * (2 + head[2])) goto malformed;
    b->stamps = (const double *)(at + 24);
    b->times = (const int64_t *)(b->stamps + 2 * b->m);
    b->values = (const double *)(b->times + b->n);
    b->served = head[2] ? b->values + b->n : NULL;
    at = (const char *)(b->values + b->n + b->n * head[2]);
    if ((b->text = PyMem_Malloc(sizeof(Text) * (size_t)(b->m + 2 * b->n + 1))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (read_blob(&at, end, b->text, b->m) == 0 && read_blob(&at, end, b->text + b->m, b->n) == 0
        && read_blob(&at, end, b->text + b->m + b->n, b->n) == 0 && at == end) return 0;
malformed:
    PyErr_SetString(PyExc_ValueError, "a malformed entry");
    return -1;
}

static PyObject *Group_replay(Group *g, PyObject *args) {
    /* replay(entry, out=None): keep a batch of the log, with the features an entry of
     * results carries or those computed for an entry of inputs; with out, those features */
    Py_buffer buffer, out = {0};
    Batch b = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*|w*", &buffer, &out)) return NULL;
    if (from_entry(g, &buffer, &b) == 0) {
        if (out.obj != NULL && out.len < 8 * b.n * g->width)
            PyErr_SetString(PyExc_ValueError, "out is too small for the batch's features");
        else if (take(g, &b, out.obj != NULL ? out.buf : NULL) == 0)
            result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.text);
    if (out.obj != NULL) PyBuffer_Release(&out);
    PyBuffer_Release(&buffer);
    return result;
}

static int Group_init(Group *g, PyObject *args, PyObject *kwds) {
    PyObject *lengths, *kinds;
    long long delay, horizon;
    if (!PyArg_ParseTuple(args, "LLO!O!p", &delay, &horizon, &PyTuple_Type, &lengths,
                          &PyTuple_Type, &kinds, &g->uses_labels)) return -1;
    g->delay = delay, g->horizon = horizon;
    g->nlengths = (int)PyTuple_GET_SIZE(lengths), g->nkinds = (int)PyTuple_GET_SIZE(kinds);
    if (g->nlengths > 8 || g->nkinds > 8) {
        PyErr_SetString(PyExc_ValueError, "at most 8 lengths and 8 aggregates");
        return -1;
    }
    for (int k = 0; k < g->nlengths; k++)
        g->lengths[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(lengths, k));
    for (int a = 0; a < g->nkinds; a++)
        g->kinds[a] = (int)PyLong_AsLong(PyTuple_GET_ITEM(kinds, a));
    g->width = g->nlengths * g->nkinds;
    if (rehash((void **)&g->names, &g->names_size, 4096, sizeof(Named)) < 0
        || rehash((void **)&g->directory, &g->directory_size, 1 << 16, sizeof(Kept)) < 0)
        return -1;
    return room_for(g, 1 << 16);
}

static void Group_dealloc(Group *g) {
    PyMem_Free(g->keys.bytes), PyMem_Free(g->id_text.bytes);
    PyMem_Free(g->names), PyMem_Free(g->directory);
    PyMem_Free(g->key_at);
    PyMem_Free(g->start), PyMem_Free(g->length), PyMem_Free(g->cap);
    PyMem_Free(g->times), PyMem_Free(g->values), PyMem_Free(g->fraud);
    PyMem_Free(g->label_time), PyMem_Free(g->served);
    PyMem_Free(g->id_at), PyMem_Free(g->id_size);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyObject *Group_slots(Group *g, void *closure) {
    int64_t rows = 0;
    for (Py_ssize_t c = 0; c < g->entities; c++) rows += g->length[c];
    return Py_BuildValue("(nL)", g->top, (long long)rows);
}

static PyMethodDef Group_methods[] = {
    {"apply", (PyCFunction)Group_apply, METH_VARARGS,
     "apply(label_ids, stamps, keys, times, ids, values, out, entry): apply a batch's "
     "labels, keep its events, their features into out; the batch's entry with entry"},
    {"inputs", (PyCFunction)Group_inputs, METH_VARARGS,
     "inputs(label_ids, stamps, keys, times, ids, values): the batch's entry of inputs"},
    {"replay", (PyCFunction)Group_replay, METH_VARARGS,
     "replay(entry, out=None): keep a batch of the log, with the features an entry of "
     "results carries or those computed for an entry of inputs; with out, those features"},
    {NULL}};

static PyObject *Group_nbytes(Group *g, void *closure) {
    int64_t per_slot = 4 * 8 + 8 * g->width + 8 + 4, per_entity = 4 * 8;
    return PyLong_FromLongLong(g->room * per_slot + g->entities_room * per_entity
                               + g->keys.room + g->id_text.room
                               + g->names_size * (int64_t)sizeof(Named)
                               + g->directory_size * (int64_t)sizeof(Kept));
}

static PyGetSetDef Group_getset[] = {
    {"slots", (getter)Group_slots, NULL, "(arena slots used, rows kept)", NULL},
    {"nbytes", (getter)Group_nbytes, NULL, "bytes allocated for the state", NULL}, {NULL}};

static PyTypeObject GroupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "arena_probe.Group",
    .tp_basicsize = sizeof(Group),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Group_init,
    .tp_dealloc = (destructor)Group_dealloc,
    .tp_methods = Group_methods,
    .tp_getset = Group_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "arena_probe", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_arena_probe(void) {
    if (PyType_Ready(&GroupType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Group", (PyObject *)&GroupType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
