# The 'docs.man' ctest (after the 'docs' test built the docs target):
#   cmake -DMAN_DIR=<build>/docs/man -DSERVERS=name=path,... -DCONFIG_GUIDE=docs/configuration.md
#         -P check_man.cmake
#
# 1. The pages a user and a package expect are there: libwsgi-epoll(1), libwsgi-scgi(1), libwsgi(3),
#    a header page and a page per function, type and macro (e.g. wsgi_call(3), a ".so" link).
# 2. Every page renders with `man -l` (man-db, groff) with groff's warnings on and none printed;
#    links resolve (man runs in MAN_DIR, where ".so man3/..." points).
# 3. For each server built (SERVERS), every option its --help lists appears in its man page and in
#    the configuration guide, so neither can silently fall behind the program.
foreach(_v MAN_DIR CONFIG_GUIDE)
  if(NOT ${_v})
    message(FATAL_ERROR "check_man.cmake: ${_v} is not set")
  endif()
endforeach()
find_program(MAN_PROGRAM man)
if(NOT MAN_PROGRAM)
  message(FATAL_ERROR "man(1) not found: install man-db and groff-base (scripts/install-deps.sh)")
endif()

set(_expected
  man1/libwsgi-epoll.1 man1/libwsgi-scgi.1
  man3/libwsgi.3 man3/libwsgi.h.3 man3/libwsgi_wsgi.h.3 man3/libwsgi_asgi.h.3
  man3/libwsgi_runtime.h.3 man3/libwsgi_common.h.3 man3/libwsgi_version.h.3
  man3/wsgi_call.3 man3/wsgi_env_build.3 man3/wsgi_iter_next.3 man3/asgi_dispatch.3
  man3/asgi_loop_set_eager.3 man3/wsgi_request.3 man3/asgi_handler.3 man3/WSGI_ERR_INVAL.3
  man3/LIBWSGI_VERSION_NUM.3)
set(_failures "")
foreach(_p IN LISTS _expected)
  if(NOT EXISTS "${MAN_DIR}/${_p}")
    list(APPEND _failures "missing: ${MAN_DIR}/${_p}")
  endif()
endforeach()

# Nothing in man3 may be named after a generic word (a struct field, a guide): see man3_prune.cmake.
file(GLOB _man3 RELATIVE "${MAN_DIR}" "${MAN_DIR}/man3/*")
foreach(_p IN LISTS _man3)
  if(NOT _p MATCHES "^man3/(libwsgi|(wsgi|asgi|libwsgi|WSGI|ASGI|LIBWSGI)_[A-Za-z0-9_]*)(\\.h)?\\.3$")
    list(APPEND _failures "unexpected page in man3: ${_p}")
  endif()
endforeach()

file(GLOB _pages RELATIVE "${MAN_DIR}" "${MAN_DIR}/man1/*" "${MAN_DIR}/man3/*")
list(LENGTH _pages _n)
set(ENV{MANWIDTH} 80)
set(ENV{LC_ALL} C.UTF-8)
set(_rendered 0)
foreach(_p IN LISTS _pages)
  # A link page (".so man3/wsgi.h.3", one per function, type and macro): its target must exist;
  # rendering it would render the target again (man takes about 0.3 s a page).
  file(STRINGS "${MAN_DIR}/${_p}" _first LIMIT_COUNT 1)
  if(_first MATCHES "^\\.so (.*)$")
    if(NOT EXISTS "${MAN_DIR}/${CMAKE_MATCH_1}")
      list(APPEND _failures "${_p}: links to ${CMAKE_MATCH_1}, which does not exist")
    endif()
    if(NOT _p STREQUAL "man3/wsgi_call.3") # one link is rendered, to check that man follows it
      continue()
    endif()
  endif()
  math(EXPR _rendered "${_rendered} + 1")
  execute_process(
    COMMAND ${MAN_PROGRAM} --warnings=w -E UTF-8 -l ${_p}
    WORKING_DIRECTORY "${MAN_DIR}"
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  string(LENGTH "${_out}" _len)
  if(NOT _rc EQUAL 0 OR NOT _err STREQUAL "" OR _len LESS 200)
    list(APPEND _failures "${_p}: man -l exit ${_rc}, ${_len} bytes of output, stderr: ${_err}")
  endif()
endforeach()

# Options: "--name" in --help; in roff the page writes them as \-\-name (or \fB\-\-name...).
string(REPLACE "," ";" _servers "${SERVERS}")
file(READ "${CONFIG_GUIDE}" _guide)
foreach(_s IN LISTS _servers)
  string(REGEX MATCH "^([^=]+)=(.*)$" _m "${_s}")
  set(_name "${CMAKE_MATCH_1}")
  set(_exe "${CMAKE_MATCH_2}")
  execute_process(COMMAND "${_exe}" --help RESULT_VARIABLE _rc OUTPUT_VARIABLE _help
                  ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    list(APPEND _failures "${_name} --help: exit ${_rc}: ${_err}")
    continue()
  endif()
  file(READ "${MAN_DIR}/man1/${_name}.1" _page)
  string(REPLACE "\\-" "-" _page "${_page}")
  string(REGEX MATCHALL "--[a-z][a-z0-9-]*" _opts "${_help}")
  list(REMOVE_DUPLICATES _opts)
  list(LENGTH _opts _nopts)
  if(_nopts LESS 5)
    list(APPEND _failures "${_name} --help lists only ${_nopts} options: ${_help}")
  endif()
  foreach(_o IN LISTS _opts)
    string(REGEX MATCH "${_o}([^a-z0-9-]|$)" _in_page "${_page}")
    if(NOT _in_page)
      list(APPEND _failures "${_name}: ${_o} (in --help) is not in man1/${_name}.1")
    endif()
    string(REGEX MATCH "${_o}([^a-z0-9-]|$)" _in_guide "${_guide}")
    if(NOT _in_guide)
      list(APPEND _failures "${_name}: ${_o} (in --help) is not in ${CONFIG_GUIDE}")
    endif()
  endforeach()
  message(STATUS "${_name}: ${_nopts} options of --help found in its man page and the guide")
endforeach()

if(_failures)
  list(JOIN _failures "\n  " _text)
  message(FATAL_ERROR "man pages:\n  ${_text}")
endif()
message(STATUS "${_n} man pages: ${_rendered} render without warnings, the others link to them")
