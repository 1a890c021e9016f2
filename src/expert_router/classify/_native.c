/* The classifier's per-prompt hot path in C (expert_router.classify._native).
 *
 * ``term_ids(text, vocabulary)``: a text's terms, cut as the analyzer cuts them (runs of word
 * characters: ``str.isalnum`` or ``_``, which is what ``\w`` matches). A run of two ASCII
 * characters or more is lower-cased here and looked up as bytes in ``vocabulary``; its id, if
 * any, goes to ``ids`` (one per occurrence, in order). A run holding a non-ASCII character
 * goes, as it is, to ``wide``, for the caller to lower-case and cut with the analyzer's own
 * regex (Unicode case mappings live in Python); ``wide`` is None when there is none. Returns
 * ``(ids, wide)``, or None when the text holds a capital sigma, whose lower case depends on
 * its neighbours: the caller then reads the whole text as the analyzer does. No non-word
 * character lower-cases to a word character (the tests check every code point), so cutting
 * before lower-casing finds the analyzer's terms. ``terms.TermCounter`` does the same in
 * Python where this module is not built.
 *
 * ``distances(rows, ids, dims, csq1)`` sums the rows of a prompt's terms (``ids``, one per
 * occurrence) of ``rows`` (vocabulary x (dims + K), float32 or float64, C-contiguous), in
 * double precision and in the order given, as numpy's ``add.reduce`` over axis 0 does; then,
 * the first ``dims`` sums being the prompt's vector z and the last K its cross terms -2 z.c,
 * it returns the K squared distances ``max(csq1[k] + cross[k] / |z|, 0)`` of the unit vector
 * z / |z| to the centroids, as a tuple; None when |z| is 0 (the caller takes numpy's path).
 *
 * What Python and numpy spend here is their dispatch, and on a core woken by the request they
 * pay it cold (docs/benchmarks.md); one C call pays it once. The module is optional: without
 * it ``terms`` and ``model`` do the same in Python and numpy, with the same results (the
 * distances to rounding).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

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

/* Look up the ASCII run [start, end) of ``text`` (lower-cased) in ``vocabulary``; append its
 * id to ``ids`` when it is known. -1 on an error. */
static inline int
look_up_ascii(int kind, const void *data, Py_ssize_t start, Py_ssize_t end,
              PyObject *vocabulary, PyObject *ids)
{
    PyObject *term = PyBytes_FromStringAndSize(NULL, end - start);
    if (term == NULL) {
        return -1;
    }
    char *out = PyBytes_AS_STRING(term);
    for (Py_ssize_t j = start; j < end; j++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, j);
        *out++ = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    PyObject *id = PyDict_GetItemWithError(vocabulary, term); /* borrowed */
    Py_DECREF(term);
    if (id == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return PyList_Append(ids, id);
}

/* The cut of ``term_ids`` over a text of ``kind``; inlined with a constant kind for ASCII
 * text, where no run is wide. */
static inline PyObject *
cut(PyObject *text, int kind, const void *data, Py_ssize_t n, PyObject *vocabulary)
{
    PyObject *ids = PyList_New(0), *wide = NULL;
    if (ids == NULL) {
        return NULL;
    }
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
            if (i - start < 2) {
                continue; /* a term has two characters at least (the analyzer's \w\w+) */
            }
            if (look_up_ascii(kind, data, start, i, vocabulary, ids) < 0) {
                goto fail;
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
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "term_ids(text: str, vocabulary: dict) expected");
        return NULL;
    }
    PyObject *text = args[0], *vocabulary = args[1];
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        return cut(text, PyUnicode_1BYTE_KIND, data, n, vocabulary);
    }
    return cut(text, PyUnicode_KIND(text), data, n, vocabulary);
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
    {"term_ids", (PyCFunction)(void (*)(void))term_ids, METH_FASTCALL,
     "term_ids(text, vocabulary) -> tuple[list[int], list[str] | None] | None: the ids of a\n"
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
