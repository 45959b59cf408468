/* The few CPython C API calls whose best public form depends on the Python version (3.11 to 3.13):
 * the newer call where it exists, a fallback built from public API for older versions. Included by
 * internal.h after Python.h; nothing else in lib/ tests PY_VERSION_HEX. */
#ifndef LIBWSGI_PYCOMPAT_H
#define LIBWSGI_PYCOMPAT_H

#include <string.h>

#if PY_VERSION_HEX >= 0x030D0000
/* Python 3.13: an attribute or key that may be missing, as a strong reference, without raising
 * and clearing an AttributeError / KeyError. */
#define lw_getattr_opt     PyObject_GetOptionalAttr
#define lw_getattr_opt_str PyObject_GetOptionalAttrString
#define lw_dict_getref     PyDict_GetItemRef
#define lw_dict_getref_str PyDict_GetItemStringRef
#else
/** Like PyObject_GetOptionalAttr(): 1 and a new reference in *res if @p o has the attribute, 0
 * and NULL if it has not (no exception set), -1 and NULL on any other error. */
static inline int lw_getattr_opt(PyObject *o, PyObject *name, PyObject **res)
{
    *res = PyObject_GetAttr(o, name);
    if (*res) return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();
    return 0;
}

/** lw_getattr_opt() with a C string name (PyObject_GetOptionalAttrString()). */
static inline int lw_getattr_opt_str(PyObject *o, const char *name, PyObject **res)
{
    PyObject *n = PyUnicode_FromString(name);
    if (!n) {
        *res = NULL;
        return -1;
    }
    int r = lw_getattr_opt(o, n, res);
    Py_DECREF(n);
    return r;
}

/** Like PyDict_GetItemRef(): 1 and a new reference in *res if @p key is in the dict @p d, 0 and
 * NULL if not, -1 and NULL on error (e.g. an unhashable key). */
static inline int lw_dict_getref(PyObject *d, PyObject *key, PyObject **res)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    *res = Py_XNewRef(v);
    if (v) return 1;
    return PyErr_Occurred() ? -1 : 0;
}

/** lw_dict_getref() with a C string key (PyDict_GetItemStringRef()). */
static inline int lw_dict_getref_str(PyObject *d, const char *key, PyObject **res)
{
    PyObject *k = PyUnicode_FromString(key);
    if (!k) {
        *res = NULL;
        return -1;
    }
    int r = lw_dict_getref(d, k, res);
    Py_DECREF(k);
    return r;
}
#endif

/** PyUnicode_READY() where a str may still be a legacy (not yet canonical) object: only up to
 * Python 3.11. From 3.12 on every str is ready and the macro is a deprecated no-op. */
#if PY_VERSION_HEX >= 0x030C0000
#define lw_unicode_ready(s) ((void)(s), 0)
#else
#define lw_unicode_ready(s) PyUnicode_READY(s)
#endif

/** Resizes the bytes object *pb, which the caller owns alone, to @p n bytes, keeping the first
 * min(old, n) bytes. A new object and a copy: the in-place _PyBytes_Resize() is private API. On
 * failure *pb is released and set to NULL and -1 is returned, as _PyBytes_Resize() does. */
static inline int lw_bytes_resize(PyObject **pb, Py_ssize_t n)
{
    PyObject *old = *pb;
    Py_ssize_t keep = PyBytes_GET_SIZE(old) < n ? PyBytes_GET_SIZE(old) : n;
    PyObject *nb = PyBytes_FromStringAndSize(NULL, n);
    if (nb) memcpy(PyBytes_AS_STRING(nb), PyBytes_AS_STRING(old), (size_t)keep);
    Py_DECREF(old);
    *pb = nb;
    return nb ? 0 : -1;
}

#endif
