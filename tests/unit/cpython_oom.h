/*
 * cpython_oom.h - whether the CPython being built against survives a Python allocation failing
 * on the exception path (call a function that raises, format its traceback), on its own,
 * without libwsgi. Shown by test_cpython_oom.c (which fails when this stops being true), used by
 * test_failmalloc.c to decide whether Python's allocations are swept.
 *
 * 1 for Debian's release CPython 3.11. 0 for its debug build (the interpreter's own assertions
 * fire on that path) and for 3.12 / 3.13 (frame over-release under allocation failure, CPython
 * gh-151763 / gh-151818): see test_cpython_oom.c.
 */
#ifndef LIBWSGI_TEST_CPYTHON_OOM_H
#define LIBWSGI_TEST_CPYTHON_OOM_H

#include <Python.h>

#if defined(Py_DEBUG) || PY_VERSION_HEX >= 0x030C0000
#define FM_PYTHON_SURVIVES_OOM 0
#else
#define FM_PYTHON_SURVIVES_OOM 1
#endif

#endif
