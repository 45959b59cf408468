# ctest hosts.module (cmake -P): _libwsgi_host.so, the servers built as an extension module of
# the Python executable (examples/epoll/pyexe.h), exports its module init only and loads no
# libpython (the executable provides the C API: a libpython*.so here would be a second
# interpreter in the process).
#
#   cmake -DMODULE=<_libwsgi_host.so> -P check_host_module.cmake
if(NOT DEFINED MODULE)
  message(FATAL_ERROR "check_host_module.cmake: -DMODULE= is required")
endif()
execute_process(COMMAND nm -D --defined-only "${MODULE}" OUTPUT_VARIABLE _nm RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "nm -D ${MODULE} failed (${_rc})")
endif()
string(REGEX MATCHALL "[^\n]+" _lines "${_nm}")
set(_exported "")
foreach(l IN LISTS _lines)
  if(l MATCHES " [TDBRVWiu] ([^ ]+)$")
    list(APPEND _exported "${CMAKE_MATCH_1}")
  endif()
endforeach()
if(NOT _exported STREQUAL "PyInit__libwsgi_host")
  message(FATAL_ERROR "${MODULE} exports more than its module init: ${_exported}")
endif()
execute_process(COMMAND ldd "${MODULE}" OUTPUT_VARIABLE _ldd RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR _ldd MATCHES "libpython")
  message(FATAL_ERROR "ldd ${MODULE} (${_rc}): a libpython, or no answer:\n${_ldd}")
endif()
message(STATUS "${MODULE}: exports PyInit__libwsgi_host only, needs no libpython")
