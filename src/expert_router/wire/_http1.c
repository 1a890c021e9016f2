/* The httptools callbacks that run per header and per body piece, in C
 * (expert_router.wire._http1; its Python twin and the reasons: wire/http1_callbacks.py).
 *
 * ``HeadFields(refuse, max_headers, max_bytes)`` takes a request head's ``on_url`` and
 * ``on_header``: the target, appended; every header counted against ``max_headers`` and its
 * bytes (name + value + 4) with the target's against ``max_bytes``; Host values listed;
 * Content-Length, Authorization (a second one refused), Transfer-Encoding and Expect kept as
 * sent. A limit passed raises ``refuse(status, code, message)``, which stops llhttp.
 *
 * ``BodyParts(max_chunk, max_error)`` takes an answer's ``on_body`` and ``on_chunk_complete``:
 * the pieces listed in ``parts``, ``whole`` the number of them that make whole chunks; with
 * ``chunked`` set, a chunk growing past ``max_chunk`` sets ``over`` and raises ChunkTooLarge;
 * with ``error_body`` set (a bytearray), the pieces go there instead, up to ``max_error``
 * bytes. ``single()`` takes the one whole chunk when that is all there is.
 *
 * Header names are compared case-insensitively in ASCII, as ``bytes.lower`` does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyObject *ChunkTooLarge;

/* -- HeadFields ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *refuse;
    PyObject *url;    /* bytes */
    PyObject *hosts;  /* list of bytes */
    PyObject *length; /* bytes or NULL (None) */
    PyObject *auth;
    PyObject *te;
    PyObject *expect;
    Py_ssize_t size;
    Py_ssize_t count;
    Py_ssize_t max_headers;
    Py_ssize_t max_bytes;
} HeadFields;

static PyObject *
refuse(HeadFields *self, int status, const char *code, const char *message)
{
    PyObject *exc = PyObject_CallFunction(self->refuse, "iss", status, code, message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int
head_reset(HeadFields *self)
{
    PyObject *hosts = PyList_New(0);
    if (hosts == NULL) {
        return -1;
    }
    Py_XSETREF(self->hosts, hosts);
    Py_XSETREF(self->url, PyBytes_FromStringAndSize(NULL, 0));
    Py_CLEAR(self->length);
    Py_CLEAR(self->auth);
    Py_CLEAR(self->te);
    Py_CLEAR(self->expect);
    self->size = self->count = 0;
    return self->url == NULL ? -1 : 0;
}

static int
head_init(HeadFields *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"refuse", "max_headers", "max_bytes", NULL};
    PyObject *fn;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn", names, &fn, &self->max_headers,
                                     &self->max_bytes)) {
        return -1;
    }
    Py_INCREF(fn);
    Py_XSETREF(self->refuse, fn);
    return head_reset(self);
}

static PyObject *
head_reset_method(HeadFields *self, PyObject *Py_UNUSED(ignored))
{
    if (head_reset(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
head_on_url(HeadFields *self, PyObject *url)
{
    if (!PyBytes_Check(url)) {
        PyErr_SetString(PyExc_TypeError, "on_url takes bytes");
        return NULL;
    }
    self->size += PyBytes_GET_SIZE(url);
    if (self->size > self->max_bytes) {
        return refuse(self, 414, "uri_too_long", "request target too long");
    }
    if (PyBytes_GET_SIZE(self->url) == 0) {
        Py_INCREF(url);
        Py_SETREF(self->url, url);
    }
    else {
        PyBytes_Concat(&self->url, url); /* a target llhttp handed over in pieces */
        if (self->url == NULL) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static int
named(PyObject *name, const char *lower, Py_ssize_t n)
{
    /* ``name.lower() == lower`` for an ASCII ``lower`` of length n */
    if (PyBytes_GET_SIZE(name) != n) {
        return 0;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(name);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        }
        if (c != (unsigned char)lower[i]) {
            return 0;
        }
    }
    return 1;
}

static void
keep(PyObject **slot, PyObject *value)
{
    Py_INCREF(value);
    Py_XSETREF(*slot, value);
}

static PyObject *
head_on_header(HeadFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "on_header takes two bytes: name, value");
        return NULL;
    }
    PyObject *name = args[0], *value = args[1];
    self->count += 1;
    self->size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
    if (self->count > self->max_headers) {
        return refuse(self, 431, "too_many_headers", "too many request headers");
    }
    if (self->size > self->max_bytes) {
        return refuse(self, 431, "headers_too_large", "the request head is too large");
    }
    switch (PyBytes_GET_SIZE(name)) {
    case 4:
        if (named(name, "host", 4) && PyList_Append(self->hosts, value) < 0) {
            return NULL;
        }
        break;
    case 6:
        if (named(name, "expect", 6)) {
            keep(&self->expect, value);
        }
        break;
    case 13:
        if (named(name, "authorization", 13)) {
            if (self->auth != NULL) {
                return refuse(self, 400, "duplicate_header", "more than one Authorization header");
            }
            keep(&self->auth, value);
        }
        break;
    case 14:
        if (named(name, "content-length", 14)) {
            keep(&self->length, value);
        }
        break;
    case 17:
        if (named(name, "transfer-encoding", 17)) {
            keep(&self->te, value);
        }
        break;
    }
    Py_RETURN_NONE;
}

static int
head_traverse(HeadFields *self, visitproc visit, void *arg)
{
    Py_VISIT(self->refuse);
    Py_VISIT(self->hosts);
    return 0;
}

static int
head_clear(HeadFields *self)
{
    Py_CLEAR(self->refuse);
    Py_CLEAR(self->url);
    Py_CLEAR(self->hosts);
    Py_CLEAR(self->length);
    Py_CLEAR(self->auth);
    Py_CLEAR(self->te);
    Py_CLEAR(self->expect);
    return 0;
}

static void
head_dealloc(HeadFields *self)
{
    PyObject_GC_UnTrack(self);
    head_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef head_methods[] = {
    {"reset", (PyCFunction)head_reset_method, METH_NOARGS, "Ready for the next request's head."},
    {"on_url", (PyCFunction)head_on_url, METH_O, "llhttp's callback: (a piece of) the target."},
    {"on_header", (PyCFunction)(void (*)(void))head_on_header, METH_FASTCALL,
     "llhttp's callback: one header."},
    {NULL},
};

static PyMemberDef head_members[] = {
    {"refuse", T_OBJECT, offsetof(HeadFields, refuse), READONLY, NULL},
    {"url", T_OBJECT, offsetof(HeadFields, url), READONLY, NULL},
    {"hosts", T_OBJECT, offsetof(HeadFields, hosts), READONLY, NULL},
    {"length", T_OBJECT, offsetof(HeadFields, length), READONLY, NULL},
    {"auth", T_OBJECT, offsetof(HeadFields, auth), READONLY, NULL},
    {"te", T_OBJECT, offsetof(HeadFields, te), READONLY, NULL},
    {"expect", T_OBJECT, offsetof(HeadFields, expect), READONLY, NULL},
    {"size", T_PYSSIZET, offsetof(HeadFields, size), READONLY, NULL},
    {"count", T_PYSSIZET, offsetof(HeadFields, count), READONLY, NULL},
    {"max_headers", T_PYSSIZET, offsetof(HeadFields, max_headers), READONLY, NULL},
    {"max_bytes", T_PYSSIZET, offsetof(HeadFields, max_bytes), READONLY, NULL},
    {NULL},
};

static PyTypeObject HeadFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "expert_router.wire._http1.HeadFields",
    .tp_basicsize = sizeof(HeadFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A request head's target and the headers the gateway reads.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)head_init,
    .tp_dealloc = (destructor)head_dealloc,
    .tp_traverse = (traverseproc)head_traverse,
    .tp_clear = (inquiry)head_clear,
    .tp_methods = head_methods,
    .tp_members = head_members,
};

/* -- BodyParts -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *parts;      /* list of bytes */
    PyObject *error_body; /* bytearray, or NULL (None) */
    Py_ssize_t whole;
    Py_ssize_t chunk;
    Py_ssize_t max_chunk;
    Py_ssize_t max_error;
    char chunked;
    char over;
} BodyParts;

static int
body_reset(BodyParts *self)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return -1;
    }
    Py_XSETREF(self->parts, parts);
    Py_CLEAR(self->error_body);
    self->whole = self->chunk = 0;
    self->chunked = self->over = 0;
    return 0;
}

static int
body_init(BodyParts *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"max_chunk", "max_error", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn", names, &self->max_chunk,
                                     &self->max_error)) {
        return -1;
    }
    return body_reset(self);
}

static PyObject *
body_reset_method(BodyParts *self, PyObject *Py_UNUSED(ignored))
{
    if (body_reset(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
body_on_body(BodyParts *self, PyObject *body)
{
    if (!PyBytes_Check(body)) {
        PyErr_SetString(PyExc_TypeError, "on_body takes bytes");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(body);
    if (self->error_body != NULL) {
        PyObject *eb = self->error_body;
        Py_ssize_t have = PyByteArray_GET_SIZE(eb);
        Py_ssize_t take = self->max_error - have;
        if (take > n) {
            take = n;
        }
        if (take > 0) {
            if (PyByteArray_Resize(eb, have + take) < 0) {
                return NULL;
            }
            memcpy(PyByteArray_AS_STRING(eb) + have, PyBytes_AS_STRING(body), take);
        }
        Py_RETURN_NONE;
    }
    if (self->chunked) { /* a chunk is held until whole: bounded */
        self->chunk += n;
        if (self->chunk > self->max_chunk) {
            self->over = 1;
            PyErr_SetNone(ChunkTooLarge);
            return NULL;
        }
    }
    if (PyList_Append(self->parts, body) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
body_on_chunk_complete(BodyParts *self, PyObject *Py_UNUSED(ignored))
{
    self->whole = PyList_GET_SIZE(self->parts);
    self->chunk = 0;
    Py_RETURN_NONE;
}

static PyObject *
body_single(BodyParts *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *parts = self->parts;
    if (self->whole != 1 || PyList_GET_SIZE(parts) != 1) {
        Py_RETURN_NONE;
    }
    PyObject *item = PyList_GET_ITEM(parts, 0);
    Py_INCREF(item);
    if (PyList_SetSlice(parts, 0, 1, NULL) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    self->whole = 0;
    return item;
}

static int
body_set_parts(BodyParts *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyList_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "parts is a list");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(self->parts, value);
    return 0;
}

static PyObject *
body_get_parts(BodyParts *self, void *Py_UNUSED(closure))
{
    Py_INCREF(self->parts);
    return self->parts;
}

static int
body_set_error_body(BodyParts *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value != NULL && value != Py_None && !PyByteArray_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "error_body is a bytearray or None");
        return -1;
    }
    if (value == Py_None) {
        value = NULL;
    }
    Py_XINCREF(value);
    Py_XSETREF(self->error_body, value);
    return 0;
}

static PyObject *
body_get_error_body(BodyParts *self, void *Py_UNUSED(closure))
{
    PyObject *eb = self->error_body != NULL ? self->error_body : Py_None;
    Py_INCREF(eb);
    return eb;
}

static int
body_traverse(BodyParts *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parts);
    return 0;
}

static int
body_clear(BodyParts *self)
{
    Py_CLEAR(self->parts);
    Py_CLEAR(self->error_body);
    return 0;
}

static void
body_dealloc(BodyParts *self)
{
    PyObject_GC_UnTrack(self);
    body_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef body_methods[] = {
    {"reset", (PyCFunction)body_reset_method, METH_NOARGS, "Ready for the next answer."},
    {"on_body", (PyCFunction)body_on_body, METH_O, "llhttp's callback: a body piece."},
    {"on_chunk_complete", (PyCFunction)body_on_chunk_complete, METH_NOARGS,
     "llhttp's callback: a chunk ended."},
    {"single", (PyCFunction)body_single, METH_NOARGS,
     "The one whole chunk collected, taken; None when anything else was collected."},
    {NULL},
};

static PyMemberDef body_members[] = {
    {"whole", T_PYSSIZET, offsetof(BodyParts, whole), 0, NULL},
    {"chunk", T_PYSSIZET, offsetof(BodyParts, chunk), 0, NULL},
    {"chunked", T_BOOL, offsetof(BodyParts, chunked), 0, NULL},
    {"over", T_BOOL, offsetof(BodyParts, over), 0, NULL},
    {"max_chunk", T_PYSSIZET, offsetof(BodyParts, max_chunk), READONLY, NULL},
    {"max_error", T_PYSSIZET, offsetof(BodyParts, max_error), READONLY, NULL},
    {NULL},
};

static PyGetSetDef body_getset[] = {
    {"parts", (getter)body_get_parts, (setter)body_set_parts, NULL, NULL},
    {"error_body", (getter)body_get_error_body, (setter)body_set_error_body, NULL, NULL},
    {NULL},
};

static PyTypeObject BodyPartsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "expert_router.wire._http1.BodyParts",
    .tp_basicsize = sizeof(BodyParts),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An answer's body pieces as llhttp de-chunks them.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)body_init,
    .tp_dealloc = (destructor)body_dealloc,
    .tp_traverse = (traverseproc)body_traverse,
    .tp_clear = (inquiry)body_clear,
    .tp_methods = body_methods,
    .tp_members = body_members,
    .tp_getset = body_getset,
};

/* -- the module ------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "expert_router.wire._http1",
    .m_doc = "The httptools callbacks that run per header and per body piece, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__http1(void)
{
    if (PyType_Ready(&HeadFieldsType) < 0 || PyType_Ready(&BodyPartsType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    ChunkTooLarge = PyErr_NewExceptionWithDoc(
        "expert_router.wire._http1.ChunkTooLarge",
        "Raised inside llhttp when a chunk grows past max_chunk (llhttp stops).", NULL, NULL);
    if (ChunkTooLarge == NULL || PyModule_AddObjectRef(m, "ChunkTooLarge", ChunkTooLarge) < 0 ||
        PyModule_AddObjectRef(m, "HeadFields", (PyObject *)&HeadFieldsType) < 0 ||
        PyModule_AddObjectRef(m, "BodyParts", (PyObject *)&BodyPartsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
