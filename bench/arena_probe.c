/* bench/arena.py's probe compiled: one window group's state as arrays, events appended in
 * place one at a time, every window found by binary search within the entity's segment.
 * ``replay`` keeps a batch another copy of the state computed, with the features it served
 * (bench/group_log.py's copies).
 *
 * The same cases as the numpy probe and no others: each entity's events in time order
 * without ties, labels for kept events, aggregates count, mean (of one field) and rate.
 * Sums follow numpy's add.reduceat (the first value, plus numpy's pairwise sum of the
 * rest), so the values are WindowEngine's bit for bit. Built by bench/arena.py with the
 * system's C compiler; not part of the package. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { COUNT = 0, MEAN = 1, RATE = 2 };

typedef struct {
    PyObject_HEAD
    int64_t delay, horizon, lengths[8];
    int nlengths, kinds[8], nkinds, width;
    PyObject *codes;      /* entity key -> int code */
    PyObject *directory;  /* event id -> (code, time), or NULL */
    int64_t *start, *length, *cap;  /* per entity: rows [start, start + length) of the
                                       slots [start, start + cap) */
    Py_ssize_t entities, entities_room;
    int64_t *times;
    double *values, *fraud, *label_time, *served;
    PyObject **ids;
    Py_ssize_t top, room;
} Group;

static int grow(void **p, Py_ssize_t count, size_t item) {
    void *q = PyMem_Realloc(*p, (size_t)count * item);
    if (q == NULL) { PyErr_NoMemory(); return -1; }
    *p = q;
    return 0;
}

static int room_for(Group *g, Py_ssize_t slots) {  /* slots past top, and one spare */
    if (g->top + slots < g->room) return 0;
    Py_ssize_t room = g->room * 2 > g->top + slots + 1 ? g->room * 2 : g->top + slots + 1;
    if (grow((void **)&g->times, room, 8) || grow((void **)&g->values, room, 8)
        || grow((void **)&g->fraud, room, 8) || grow((void **)&g->label_time, room, 8)
        || grow((void **)&g->served, room * g->width, 8)
        || grow((void **)&g->ids, room, sizeof(PyObject *))) return -1;
    memset(g->ids + g->room, 0, (size_t)(room - g->room) * sizeof(PyObject *));
    g->room = room;
    return 0;
}

static Py_ssize_t entity(Group *g, PyObject *key) {
    PyObject *found = PyDict_GetItemWithError(g->codes, key);
    if (found != NULL) return PyLong_AsSsize_t(found);
    if (PyErr_Occurred()) return -1;
    Py_ssize_t code = g->entities;
    if (code == g->entities_room) {
        Py_ssize_t room = code ? 2 * code : 1024;
        if (grow((void **)&g->start, room, 8) || grow((void **)&g->length, room, 8)
            || grow((void **)&g->cap, room, 8)) return -1;
        g->entities_room = room;
    }
    g->start[code] = g->length[code] = g->cap[code] = 0;
    PyObject *value = PyLong_FromSsize_t(code);
    if (value == NULL || PyDict_SetItem(g->codes, key, value) < 0) { Py_XDECREF(value); return -1; }
    Py_DECREF(value);
    g->entities++;
    return code;
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
    memmove(g->ids + to, g->ids + s, (size_t)n * sizeof(PyObject *));
    memset(g->ids + s, 0, (size_t)n * sizeof(PyObject *));
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

static int64_t keep(Group *g, PyObject *key, int64_t time, PyObject *id, double value,
                    int64_t horizon, Py_ssize_t *entity_code) {
    /* Keep one event: its entity's rows trimmed to the horizon, the event appended (its
     * segment moved if full), the directory told; its slot, or -1 with an exception. */
    Py_ssize_t code = entity(g, key);
    if (code < 0) return -1;
    *entity_code = code;
    int64_t s = g->start[code], len = g->length[code];
    while (len > 0 && g->times[s] <= horizon) {  /* trimmed: no window reads it again */
        Py_CLEAR(g->ids[s]);
        s++, len--;
    }
    g->cap[code] -= s - g->start[code];
    g->start[code] = s, g->length[code] = len;
    if (len > 0 && g->times[s + len - 1] >= time) {
        PyErr_SetString(PyExc_ValueError, "an entity's events out of time order, or tied");
        return -1;
    }
    if (len + 1 > g->cap[code] && make_room(g, code) < 0) return -1;
    int64_t j = g->start[code] + len;
    g->times[j] = time;
    g->values[j] = value;
    g->fraud[j] = 0.;
    g->label_time[j] = -INFINITY;
    Py_INCREF(id);
    g->ids[j] = id;
    g->length[code] = len + 1;
    if (g->directory != NULL) {
        PyObject *place = Py_BuildValue("(nL)", code, (long long)time);
        if (place == NULL || PyDict_SetItem(g->directory, id, place) < 0) {
            Py_XDECREF(place);
            return -1;
        }
        Py_DECREF(place);
    }
    return j;
}

static void features(Group *g, Py_ssize_t code, int64_t j, double *out) {
    /* The window features of the event at slot j, over its segment's rows up to it. */
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
            out[column] = x;
            g->served[j * g->width + column] = x;
        }
    }
}
typedef struct {
    PyObject *keys, *ids;
    Py_buffer times, values, rows;
    long long mark;
} Batch;

static int batch_args(Group *g, PyObject *args, Batch *b, int writable) {
    /* (keys, times, ids, values, mark, rows): rows n x width, written or read */
    if (!PyArg_ParseTuple(args, writable ? "O!y*O!y*Lw*" : "O!y*O!y*Ly*", &PyList_Type,
                          &b->keys, &b->times, &PyList_Type, &b->ids, &b->values, &b->mark,
                          &b->rows)) return -1;
    Py_ssize_t n = PyList_GET_SIZE(b->keys);
    if (PyList_GET_SIZE(b->ids) != n || b->times.len < n * 8 || b->values.len < n * 8
        || b->rows.len < n * g->width * 8) {
        PyErr_SetString(PyExc_ValueError, "keys, ids, times, values and rows disagree in size");
        PyBuffer_Release(&b->times), PyBuffer_Release(&b->values), PyBuffer_Release(&b->rows);
        return -1;
    }
    return 0;
}

static PyObject *run(Group *g, PyObject *args, int compute) {
    Batch b;
    if (batch_args(g, args, &b, compute) < 0) return NULL;
    const int64_t *t = b.times.buf;
    const double *v = b.values.buf;  /* float64, C order: the caller's numpy arrays */
    double *rows = b.rows.buf;
    int64_t horizon = b.mark - g->horizon;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(b.keys); i++) {
        Py_ssize_t code;
        int64_t j = keep(g, PyList_GET_ITEM(b.keys, i), t[i], PyList_GET_ITEM(b.ids, i), v[i],
                         horizon, &code);
        if (j < 0) goto done;
        if (compute)
            features(g, code, j, rows + i * g->width);
        else
            memcpy(g->served + j * g->width, rows + i * g->width, (size_t)g->width * 8);
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&b.times), PyBuffer_Release(&b.values), PyBuffer_Release(&b.rows);
    return result;
}

static PyObject *Group_apply(Group *g, PyObject *args) { return run(g, args, 1); }

static PyObject *Group_replay(Group *g, PyObject *args) { return run(g, args, 0); }

static PyObject *Group_label(Group *g, PyObject *args) {
    PyObject *event_id;
    double when, label;
    long long horizon;
    if (!PyArg_ParseTuple(args, "UddL", &event_id, &when, &label, &horizon)) return NULL;
    PyObject *place = g->directory ? PyDict_GetItemWithError(g->directory, event_id) : NULL;
    if (place == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a label for an event not kept");
        return NULL;
    }
    Py_ssize_t code = PyLong_AsSsize_t(PyTuple_GET_ITEM(place, 0));
    long long time = PyLong_AsLongLong(PyTuple_GET_ITEM(place, 1));
    if (time <= horizon) Py_RETURN_FALSE;
    int64_t s = g->start[code], end = s + g->length[code];
    int64_t j = after(g->times, s, end, time - 1);
    if (j >= end || PyUnicode_Compare(g->ids[j], event_id) != 0) {
        PyErr_SetString(PyExc_ValueError, "a label's event not where the directory says");
        return NULL;
    }
    if (when < g->label_time[j] || (when == g->label_time[j] && label <= g->fraud[j]))
        Py_RETURN_FALSE;
    g->label_time[j] = when;
    g->fraud[j] = label;
    Py_RETURN_TRUE;
}

static int Group_init(Group *g, PyObject *args, PyObject *kwds) {
    PyObject *lengths, *kinds;
    long long delay, horizon;
    int directory;
    if (!PyArg_ParseTuple(args, "LLO!O!p", &delay, &horizon, &PyTuple_Type, &lengths,
                          &PyTuple_Type, &kinds, &directory)) return -1;
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
    g->codes = PyDict_New();
    g->directory = directory ? PyDict_New() : NULL;
    if (g->codes == NULL || (directory && g->directory == NULL)) return -1;
    return room_for(g, 1 << 16);
}

static void Group_dealloc(Group *g) {
    for (Py_ssize_t j = 0; j < g->top; j++) Py_XDECREF(g->ids[j]);
    Py_XDECREF(g->codes);
    Py_XDECREF(g->directory);
    PyMem_Free(g->start), PyMem_Free(g->length), PyMem_Free(g->cap);
    PyMem_Free(g->times), PyMem_Free(g->values), PyMem_Free(g->fraud);
    PyMem_Free(g->label_time), PyMem_Free(g->served), PyMem_Free(g->ids);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyObject *Group_slots(Group *g, void *closure) {
    int64_t kept = 0;
    for (Py_ssize_t c = 0; c < g->entities; c++) kept += g->length[c];
    return Py_BuildValue("(nL)", g->top, (long long)kept);
}

static PyMethodDef Group_methods[] = {
    {"apply", (PyCFunction)Group_apply, METH_VARARGS,
     "apply(keys, times, ids, values, mark, out): keep a batch, its features into out"},
    {"replay", (PyCFunction)Group_replay, METH_VARARGS,
     "replay(keys, times, ids, values, mark, served): keep a batch another copy computed"},
    {"label", (PyCFunction)Group_label, METH_VARARGS,
     "label(event_id, label_time, label, horizon): whether it won"},
    {NULL}};

static PyGetSetDef Group_getset[] = {
    {"slots", (getter)Group_slots, NULL, "(arena slots used, rows kept)", NULL}, {NULL}};

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
