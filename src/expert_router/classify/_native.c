/* The classifier's per-prompt hot path in C (expert_router.classify._native).
 *
 * ``vocabulary_table(vocabulary)``: the ASCII terms of a vocabulary (``dict[bytes, int]``) as
 * an open-addressing hash table for ``term_ids``, in a capsule. Each slot is 32 bytes, on a
 * 32-byte boundary, and holds its term inline (up to ``INLINE`` bytes; longer ones point into
 * a pool after the slots), so a lookup touches one cache line: a dict lookup touches four (its
 * index, its entry, the key object, the value object), and on a core woken by the request each
 * is a miss from memory (docs/benchmarks.md).
 *
 * ``term_ids(text, table)``: a text's terms, cut as the analyzer cuts them (runs of word
 * characters: ``str.isalnum`` or ``_``, which is what ``\w`` matches). A run of two ASCII
 * characters or more is looked up in ``table`` as it lower-cases (hashed, and compared with
 * the slot's term, as it is read: no copy); its id, if any, goes to ``ids`` (one per
 * occurrence, in order). The runs go in batches: the slots of a batch are all asked for
 * (prefetched) before the first is compared, so that their misses overlap. A run holding a
 * non-ASCII character goes, as it is, to ``wide``, for the caller to lower-case and cut with
 * the analyzer's own regex (Unicode case mappings live in Python); ``wide`` is None when there
 * is none. Returns ``(ids, wide)``, or None when the text holds a capital sigma, whose lower
 * case depends on its neighbours: the caller then reads the whole text as the analyzer does.
 * No non-word character lower-cases to a word character (the tests check every code point),
 * so cutting before lower-casing finds the analyzer's terms. ``terms.TermCounter`` does the
 * same in Python where this module is not built.
 *
 * ``distances(rows, ids, dims, csq1)`` sums the rows of a prompt's terms (``ids``, one per
 * occurrence) of ``rows`` (vocabulary x (dims + K), float32 or float64, C-contiguous), in
 * double precision and in the order given, as numpy's ``add.reduce`` over axis 0 does; then,
 * the first ``dims`` sums being the prompt's vector z and the last K its cross terms -2 z.c,
 * it returns the K squared distances ``max(csq1[k] + cross[k] / |z|, 0)`` of the unit vector
 * z / |z| to the centroids, as a tuple; None when |z| is 0 (the caller takes numpy's path).
 * Every row is asked for (prefetched) before the first is summed, for the same reason.
 *
 * What Python and numpy spend here is their dispatch, and on a core woken by the request they
 * pay it cold (docs/benchmarks.md); one C call pays it once. The module is optional: without
 * it ``terms`` and ``model`` do the same in Python and numpy, with the same results (the
 * distances to rounding).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define STACK_COLUMNS 512 /* sums of up to this many columns live on the stack */

static inline int
is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int
row_format(const Py_buffer *view)
{
    /* 'f' or 'd', with an optional native byte-order prefix; 0 for anything else */
    const char *f = view->format != NULL ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') {
        f++;
    }
    if (f[0] == 'f' && f[1] == '\0' && view->itemsize == 4) {
        return 'f';
    }
    if (f[0] == 'd' && f[1] == '\0' && view->itemsize == 8) {
        return 'd';
    }
    return 0;
}

static int
add_rows(const Py_buffer *view, int format, PyObject *ids, double *acc, Py_ssize_t ncols)
{
    Py_ssize_t nrows = view->shape[0];
    Py_ssize_t n = PyList_GET_SIZE(ids);
    /* Ask for every row before summing any: on a cold core each row is a miss from memory,
     * and these go out together instead of one after the other. */
    size_t row_bytes = (size_t)ncols * (format == 'f' ? sizeof(float) : sizeof(double));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(ids, i);
        Py_ssize_t id = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        if (id >= 0 && id < nrows) {
            const char *row = (const char *)view->buf + (size_t)id * row_bytes;
            for (size_t at = 0; at < row_bytes; at += 64) {
                __builtin_prefetch(row + at);
            }
        }
        else {
            PyErr_Clear(); /* reported by the loop below */
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t id = PyLong_AsSsize_t(PyList_GET_ITEM(ids, i));
        if (id == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (id < 0 || id >= nrows) {
            PyErr_Format(PyExc_IndexError, "term id %zd is outside the vocabulary (%zd)", id,
                         nrows);
            return -1;
        }
        if (format == 'f') {
            const float *row = (const float *)view->buf + id * ncols;
            for (Py_ssize_t j = 0; j < ncols; j++) {
                acc[j] += (double)row[j];
            }
        }
        else {
            const double *row = (const double *)view->buf + id * ncols;
            for (Py_ssize_t j = 0; j < ncols; j++) {
                acc[j] += row[j];
            }
        }
    }
    return 0;
}

static PyObject *
folded_distances(const double *acc, Py_ssize_t dims, PyObject *csq1)
{
    double sq = 0.0;
    for (Py_ssize_t j = 0; j < dims; j++) {
        sq += acc[j] * acc[j];
    }
    double norm = sqrt(sq);
    if (!(norm > 0.0)) {
        Py_RETURN_NONE;
    }
    double inv = 1.0 / norm;
    Py_ssize_t k = PyTuple_GET_SIZE(csq1);
    PyObject *out = PyTuple_New(k);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t c = 0; c < k; c++) {
        double base = PyFloat_AsDouble(PyTuple_GET_ITEM(csq1, c));
        if (base == -1.0 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        double d = base + acc[dims + c] * inv;
        PyObject *value = PyFloat_FromDouble(d > 0.0 ? d : 0.0);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, c, value);
    }
    return out;
}

static inline int
is_word_char(Py_UCS4 ch)
{
    return ch < 128 ? is_word((unsigned char)ch) : Py_UNICODE_ISALNUM(ch);
}

/* -- the vocabulary table ---------------------------------------------------------------- */

#define TABLE_CAPSULE "expert_router.classify._native.vocabulary_table"
#define INLINE 26 /* term bytes held in the slot itself */

typedef struct {
    uint32_t id1;  /* the term's id + 1; 0: an empty slot */
    uint16_t len;  /* the term's length in bytes */
    char key[INLINE]; /* the term, or (longer than INLINE) its offset into the pool */
} Slot;

typedef struct {
    size_t mask;     /* slots - 1 (a power of two) */
    size_t max_len;  /* the longest term: longer runs are not looked up */
    Slot *slots;     /* 32-byte aligned */
    char *pool;      /* the terms longer than INLINE, back to back */
    void *memory;    /* what was allocated (slots and pool) */
} Table;

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* A term's hash (FNV-1a, then its high bits folded in: FNV's low bits alone index the table
 * poorly): ``hash_add`` over its bytes from FNV_OFFSET, then ``hash_end``. The table is built
 * from bytes and read from text, one byte (lower-cased) at a time, with these two. */
static inline uint64_t
hash_add(uint64_t h, Py_UCS4 c)
{
    return (h ^ c) * FNV_PRIME;
}

static inline uint64_t
hash_end(uint64_t h)
{
    return h ^ (h >> 29);
}

static inline const char *
slot_key(const Table *t, const Slot *slot)
{
    if (slot->len <= INLINE) {
        return slot->key;
    }
    uint64_t at;
    memcpy(&at, slot->key, sizeof at);
    return t->pool + at;
}

static inline Py_UCS4
lower_ascii(Py_UCS4 c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* The id of the ASCII run [start, start + n) of a text, lower-cased, whose hash is ``h``; or -1.
 */
static inline long
table_find(const Table *t, int kind, const void *data, Py_ssize_t start, size_t n, uint64_t h)
{
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        const Slot *slot = &t->slots[i];
        if (slot->id1 == 0) {
            return -1;
        }
        if (slot->len != n) {
            continue;
        }
        const char *key = slot_key(t, slot);
        size_t j = 0;
        while (j < n && (Py_UCS4)(unsigned char)key[j] ==
                            lower_ascii(PyUnicode_READ(kind, data, start + (Py_ssize_t)j))) {
            j++;
        }
        if (j == n) {
            return (long)slot->id1 - 1;
        }
    }
}

static void
table_free(PyObject *capsule)
{
    Table *t = PyCapsule_GetPointer(capsule, TABLE_CAPSULE);
    if (t != NULL) {
        PyMem_Free(t->memory);
        PyMem_Free(t);
    }
}

static PyObject *
vocabulary_table(PyObject *module, PyObject *vocabulary)
{
    (void)module;
    if (!PyDict_Check(vocabulary)) {
        PyErr_SetString(PyExc_TypeError, "vocabulary_table(vocabulary: dict[bytes, int])");
        return NULL;
    }
    size_t n = (size_t)PyDict_GET_SIZE(vocabulary), slots = 16, pool = 0, max_len = 0;
    while (slots < 2 * n) { /* at most half full: short probes, and misses end soon */
        slots <<= 1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(vocabulary, &pos, &key, &value)) {
        if (!PyBytes_Check(key) || !PyLong_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "the vocabulary maps bytes to int");
            return NULL;
        }
        size_t len = (size_t)PyBytes_GET_SIZE(key);
        if (len > UINT16_MAX) {
            PyErr_SetString(PyExc_ValueError, "a term longer than 65535 bytes");
            return NULL;
        }
        pool += len > INLINE ? len : 0;
        max_len = len > max_len ? len : max_len;
    }
    Table *t = PyMem_Calloc(1, sizeof(Table));
    size_t bytes = slots * sizeof(Slot) + 32 + pool;
    void *memory = t != NULL ? PyMem_Calloc(1, bytes) : NULL;
    if (memory == NULL) {
        PyMem_Free(t);
        return PyErr_NoMemory();
    }
    t->memory = memory;
    t->slots = (Slot *)(((uintptr_t)memory + 31) & ~(uintptr_t)31);
    t->pool = (char *)(t->slots + slots);
    t->mask = slots - 1;
    t->max_len = max_len;
    size_t used = 0;
    pos = 0;
    while (PyDict_Next(vocabulary, &pos, &key, &value)) {
        long id = PyLong_AsLong(value);
        if ((id == -1 && PyErr_Occurred()) || id < 0 || id >= (long)UINT32_MAX) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "a term id outside 0..2**32-2");
            goto fail;
        }
        const char *term = PyBytes_AS_STRING(key);
        size_t len = (size_t)PyBytes_GET_SIZE(key);
        uint64_t h = FNV_OFFSET;
        for (size_t j = 0; j < len; j++) {
            h = hash_add(h, (unsigned char)term[j]);
        }
        size_t i = (size_t)hash_end(h) & t->mask;
        while (t->slots[i].id1 != 0) { /* a dict has no equal keys: no duplicate to meet */
            i = (i + 1) & t->mask;
        }
        Slot *slot = &t->slots[i];
        slot->id1 = (uint32_t)id + 1;
        slot->len = (uint16_t)len;
        if (len <= INLINE) {
            memcpy(slot->key, term, len);
        }
        else {
            uint64_t at = used;
            memcpy(slot->key, &at, sizeof at);
            memcpy(t->pool + used, term, len);
            used += len;
        }
    }
    PyObject *capsule = PyCapsule_New(t, TABLE_CAPSULE, table_free);
    if (capsule != NULL) {
        return capsule;
    }
fail:
    PyMem_Free(t->memory);
    PyMem_Free(t);
    return NULL;
}

#define BATCH 32 /* runs whose slots are asked for before the first is compared */

typedef struct {
    Py_ssize_t start;
    size_t len;
    uint64_t hash;
} Run;

/* Look up ``batch``'s runs (their slots already asked for), in order; each id found goes to
 * ``ids``. -1 on an error. */
static int
look_up(const Table *table, int kind, const void *data, const Run *batch, int n, PyObject *ids)
{
    for (int r = 0; r < n; r++) {
        long id = table_find(table, kind, data, batch[r].start, batch[r].len, batch[r].hash);
        if (id < 0) {
            continue;
        }
        PyObject *value = PyLong_FromLong(id);
        if (value == NULL || PyList_Append(ids, value) < 0) {
            Py_XDECREF(value);
            return -1;
        }
        Py_DECREF(value);
    }
    return 0;
}

/* The cut of ``term_ids`` over a text of ``kind``; inlined with a constant kind for ASCII
 * text, where no run is wide. */
static inline PyObject *
cut(PyObject *text, int kind, const void *data, Py_ssize_t n, const Table *table)
{
    PyObject *ids = PyList_New(0), *wide = NULL;
    if (ids == NULL) {
        return NULL;
    }
    /* Two passes over each BATCH of ASCII runs: hash each and ask for its slot, then compare.
     * On a cold core each slot is a miss from memory; asked for together, they overlap. */
    Run batch[BATCH];
    int batched = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        while (i < n && !is_word_char(PyUnicode_READ(kind, data, i))) {
            i++;
        }
        Py_ssize_t start = i;
        int ascii = 1;
        for (; i < n; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            if (ch < 128) {
                if (!is_word((unsigned char)ch)) {
                    break;
                }
                continue;
            }
            if (!Py_UNICODE_ISALNUM(ch)) {
                break;
            }
            if (ch == 0x03A3) { /* a capital sigma: the caller reads the whole text */
                Py_DECREF(ids);
                Py_XDECREF(wide);
                Py_RETURN_NONE;
            }
            ascii = 0;
        }
        if (i == start) {
            break;
        }
        if (ascii) {
            size_t len = (size_t)(i - start);
            if (len < 2 || len > table->max_len) {
                continue; /* a term has two characters at least (the analyzer's \w\w+) */
            }
            uint64_t h = FNV_OFFSET;
            for (Py_ssize_t j = start; j < i; j++) {
                h = hash_add(h, lower_ascii(PyUnicode_READ(kind, data, j)));
            }
            h = hash_end(h);
            __builtin_prefetch(&table->slots[(size_t)h & table->mask]);
            batch[batched++] = (Run){start, len, h};
            if (batched == BATCH) {
                if (look_up(table, kind, data, batch, batched, ids) < 0) {
                    goto fail;
                }
                batched = 0;
            }
            continue;
        }
        if (wide == NULL && (wide = PyList_New(0)) == NULL) {
            goto fail;
        }
        PyObject *run = PyUnicode_Substring(text, start, i);
        if (run == NULL || PyList_Append(wide, run) < 0) {
            Py_XDECREF(run);
            goto fail;
        }
        Py_DECREF(run);
    }
    if (look_up(table, kind, data, batch, batched, ids) < 0) {
        goto fail;
    }
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        goto fail;
    }
    if (wide == NULL) {
        wide = Py_None;
        Py_INCREF(wide);
    }
    PyTuple_SET_ITEM(out, 0, ids);
    PyTuple_SET_ITEM(out, 1, wide);
    return out;
fail:
    Py_DECREF(ids);
    Py_XDECREF(wide);
    return NULL;
}

static PyObject *
term_ids(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyCapsule_IsValid(args[1], TABLE_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "term_ids(text: str, table: vocabulary_table) expected");
        return NULL;
    }
    PyObject *text = args[0];
    const Table *table = PyCapsule_GetPointer(args[1], TABLE_CAPSULE);
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        return cut(text, PyUnicode_1BYTE_KIND, data, n, table);
    }
    return cut(text, PyUnicode_KIND(text), data, n, table);
}

static PyObject *
distances(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "distances(rows, ids, dims, csq1) takes 4 arguments");
        return NULL;
    }
    PyObject *ids = args[1], *csq1 = args[3];
    if (!PyList_Check(ids) || !PyTuple_Check(csq1)) {
        PyErr_SetString(PyExc_TypeError, "ids must be a list and csq1 a tuple");
        return NULL;
    }
    Py_ssize_t dims = PyLong_AsSsize_t(args[2]);
    if (dims == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    double stack[STACK_COLUMNS];
    double *acc = stack;
    int format = row_format(&view);
    Py_ssize_t ncols = view.ndim == 2 ? view.shape[1] : -1;
    if (format == 0 || ncols < 0 || dims < 0 || dims + PyTuple_GET_SIZE(csq1) != ncols) {
        PyErr_SetString(PyExc_ValueError,
                        "rows must be a 2-D float32/float64 array of dims + K columns");
        goto done;
    }
    if (ncols > STACK_COLUMNS) {
        acc = PyMem_Malloc((size_t)ncols * sizeof(double));
        if (acc == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    memset(acc, 0, (size_t)ncols * sizeof(double));
    if (add_rows(&view, format, ids, acc, ncols) == 0) {
        result = folded_distances(acc, dims, csq1);
    }
    if (acc != stack) {
        PyMem_Free(acc);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef native_methods[] = {
    {"vocabulary_table", (PyCFunction)vocabulary_table, METH_O,
     "vocabulary_table(vocabulary: dict[bytes, int]) -> capsule: the table term_ids looks\n"
     "terms up in (see the module's source)."},
    {"term_ids", (PyCFunction)(void (*)(void))term_ids, METH_FASTCALL,
     "term_ids(text, table) -> tuple[list[int], list[str] | None] | None: the ids of a\n"
     "text's ASCII terms and its runs holding other characters (see the module's source)."},
    {"distances", (PyCFunction)(void (*)(void))distances, METH_FASTCALL,
     "distances(rows, ids, dims, csq1) -> tuple[float, ...] | None: a prompt's squared\n"
     "distances to the centroids from the rows of its terms (see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "The classifier's per-prompt hot path in C (optional: Python and numpy otherwise).",
    .m_size = 0,
    .m_methods = native_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
