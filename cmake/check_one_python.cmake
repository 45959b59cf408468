# ctest hosts.one_python (cmake -P): the host process holds exactly one CPython.
#
#   cmake -DHOST=<libwsgi-epoll> -DSTATIC_PYTHON=ON|OFF -DWORK=<dir> -P check_one_python.cmake
#
# STATIC_PYTHON=ON (LIBWSGI_STATIC_PYTHON_HOSTS): ldd of the host lists no libpython*.so. Either way,
# the host is started on an app module whose import, inside the host's interpreter, imports C
# extension modules (which resolve the C API from the executable, or from the one libpython) and
# then reads /proc/self/maps: at most one libpython*.so mapped, none with the static interpreter.
# The module ends the process with os._exit() once it has printed its verdict.
foreach(v HOST STATIC_PYTHON WORK)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "check_one_python.cmake: -D${v}= is required")
  endif()
endforeach()

if(STATIC_PYTHON)
  execute_process(COMMAND ldd "${HOST}" OUTPUT_VARIABLE _ldd RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "ldd ${HOST} failed (${_rc})")
  endif()
  if(_ldd MATCHES "libpython")
    message(FATAL_ERROR "${HOST} is linked with the static interpreter but needs a libpython:\n${_ldd}")
  endif()
  message(STATUS "ldd: no libpython in ${HOST}")
endif()

file(MAKE_DIRECTORY "${WORK}")
file(WRITE "${WORK}/one_python_check.py" [=[
import importlib, os, sys

expect_static = os.environ.get("ONE_PYTHON_STATIC") == "ON"
problems = []
# Extension modules as Debian ships them (lib-dynload, dist-packages): none links libpython, each
# takes the C API from the process. Missing ones are skipped; one that fails to load (an undefined
# symbol) is a failure.
for name in ("_json", "_ssl", "_ctypes", "_decimal", "_asyncio", "_sqlite3", "uvloop",
             "pydantic", "httptools", "yaml"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    except ImportError as e:
        problems.append("import %s: %s" % (name, e))
mapped = set()
with open("/proc/self/maps") as f:
    for line in f:
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "/libpython" in path and ".so" in path:
            mapped.add(os.path.realpath(path))
if len(mapped) > 1:
    problems.append("two interpreters mapped: %s" % sorted(mapped))
if expect_static and mapped:
    problems.append("static interpreter, yet mapped: %s" % sorted(mapped))
print("one_python_check: %s; libpython mapped: %s" %
      ("; ".join(problems) or "OK", sorted(mapped) or "none"), flush=True)
os._exit(1 if problems else 0)
]=])

set(ENV{ONE_PYTHON_STATIC} "${STATIC_PYTHON}")
execute_process(
  COMMAND "${HOST}" --app one_python_check:app --pythonpath "${WORK}" --bind 127.0.0.1:0
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc TIMEOUT 20)
message(STATUS "${_out}")
if(NOT _rc EQUAL 0 OR NOT _out MATCHES "one_python_check: OK")
  message(FATAL_ERROR "one_python_check failed (exit ${_rc}):\n${_out}\n${_err}")
endif()
