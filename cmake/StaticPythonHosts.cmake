# How the example hosts (libwsgi-epoll) and the in-process benchmarks link libwsgi and CPython:
# the interface target wsgi_host_libwsgi, which they link instead of `wsgi` (issue 10).
#
# LIBWSGI_STATIC_PYTHON_HOSTS=ON: the static libwsgi (wsgi_static's libwsgi.a) and the static
# libpython archive of the configured Python (sysconfig LIBPL/LIBRARY of LIBWSGI_PYTHON_EXECUTABLE,
# the interpreter of pkg-config's python3-embed), linked whole (--whole-archive) and exported
# (--export-dynamic), so that C extension modules (_json, _ssl, uvloop, pydantic, ...) resolve the
# C API from the executable as they do in /usr/bin/python3, and no libpython*.so is ever loaded.
# Code in libpython3.11.so runs 1.2-1.35x slower than the same code in Debian's static python3
# (PIC, calls through the PLT, no inlining across exported functions: semantic interposition).
# Debian's libpython3.11.a is not position-independent, like /usr/bin/python3: the hosts are
# then linked -no-pie, as python3 is (a position-independent archive, such as that of a pyenv
# build with --enable-shared, is linked PIE). LIBWSGI_STATIC_PYTHON_ARCHIVE=<LIBPL>/
# libpython3.11-pic.a keeps them PIE with Debian's Python, for a smaller gain (see
# examples/epoll/README.md).
#
# LIBWSGI_STATIC_PYTHON_HOSTS=OFF (the default when the configured Python has no static library or
# a test program does not link with it, and under sanitizers): the hosts link the shared
# libwsgi.so, which links libpython. The shared libwsgi.so and libwsgi.a for library users are the
# same either way.
#
# Needs: targets wsgi and wsgi_static (lib/), PYEMBED_VERSION, LIBWSGI_PYTHON_EXECUTABLE,
# LIBWSGI_SANITIZE, Threads.

find_package(Threads REQUIRED)

# The archive and the libraries it needs, from the configured Python's sysconfig (never from the
# python3 on PATH, which may be a different build).
set(_lw_archive "")
set(_lw_why "")
if(NOT EXISTS "${LIBWSGI_PYTHON_EXECUTABLE}")
  set(_lw_why "${LIBWSGI_PYTHON_EXECUTABLE} (the python3-embed interpreter) does not exist")
else()
  execute_process(
    COMMAND "${LIBWSGI_PYTHON_EXECUTABLE}" -S -c
      "import sysconfig as s; v = s.get_config_var; print(';'.join(str(v(k) or '') for k in ('py_version_short', 'LIBPL', 'LIBRARY', 'LIBS', 'SYSLIBS', 'MODLIBS')))"
    OUTPUT_VARIABLE _lw_cfg OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _lw_rc ERROR_QUIET)
  list(LENGTH _lw_cfg _lw_n)
  if(NOT _lw_rc EQUAL 0 OR NOT _lw_n EQUAL 6)
    set(_lw_why "could not read sysconfig from ${LIBWSGI_PYTHON_EXECUTABLE}")
  else()
    list(GET _lw_cfg 0 _lw_pyver)
    list(GET _lw_cfg 1 _lw_libpl)
    list(GET _lw_cfg 2 _lw_library)
    list(GET _lw_cfg 3 _lw_cfg_libs)
    list(GET _lw_cfg 4 _lw_cfg_syslibs)
    list(GET _lw_cfg 5 _lw_cfg_modlibs)
    if(NOT _lw_pyver STREQUAL PYEMBED_VERSION)
      set(_lw_why "${LIBWSGI_PYTHON_EXECUTABLE} is Python ${_lw_pyver}, python3-embed is ${PYEMBED_VERSION}")
    elseif(EXISTS "${_lw_libpl}/${_lw_library}" AND _lw_library MATCHES "\\.a$")
      set(_lw_archive "${_lw_libpl}/${_lw_library}")
    else()
      set(_lw_why "no static libpython (${_lw_libpl}/${_lw_library}) for ${LIBWSGI_PYTHON_EXECUTABLE}")
    endif()
  endif()
endif()

set(LIBWSGI_STATIC_PYTHON_ARCHIVE "${_lw_archive}" CACHE FILEPATH
    "Static libpython linked into the hosts when LIBWSGI_STATIC_PYTHON_HOSTS is ON (default: sysconfig LIBPL/LIBRARY of the configured Python)")
# The default: ON when the archive exists, except under sanitizers (their runtime and an
# uninstrumented static interpreter in one executable are not what the sanitized tests check).
if(LIBWSGI_STATIC_PYTHON_ARCHIVE AND EXISTS "${LIBWSGI_STATIC_PYTHON_ARCHIVE}" AND NOT LIBWSGI_SANITIZE)
  set(_lw_default ON)
else()
  set(_lw_default OFF)
endif()
option(LIBWSGI_STATIC_PYTHON_HOSTS
       "Link libwsgi-epoll and the benchmarks with the static libwsgi and static libpython (faster interpreter)"
       ${_lw_default})

# The libraries the archive's objects need: what `python3.X-config --ldflags --embed` lists after
# -lpythonX.Y (LIBS, SYSLIBS) and those of the modules built into the archive (MODLIBS: zlib,
# expat for Debian's).
set(_lw_syslibs "")
if(DEFINED _lw_cfg_libs)
  separate_arguments(_lw_flags UNIX_COMMAND "${_lw_cfg_libs} ${_lw_cfg_syslibs} ${_lw_cfg_modlibs}")
  foreach(f IN LISTS _lw_flags)
    if(f MATCHES "^-l" AND NOT f IN_LIST _lw_syslibs)
      list(APPEND _lw_syslibs "${f}")
    endif()
  endforeach()
endif()

# Can the archive be linked into an executable, PIE (the compiler's default) or only -no-pie?
# One try per archive (the result is cached): link a program that calls the embedding API, with the
# whole archive, so that any symbol the listed libraries do not provide fails here, not at build time.
function(_lw_try_link archive no_pie result)
  set(_dir "${CMAKE_BINARY_DIR}/CMakeFiles/static_python_try")
  file(WRITE "${_dir}/main.c"
       "#include <Python.h>\nint main(void) { Py_InitializeEx(0); return Py_FinalizeEx(); }\n")
  set(_opts "")
  if(no_pie)
    set(_opts -no-pie)
  endif()
  try_compile(_ok "${_dir}/build" SOURCES "${_dir}/main.c"
    CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${PYEMBED_INCLUDE_DIRS}"
    LINK_OPTIONS ${_opts}
    LINK_LIBRARIES -Wl,--whole-archive "${archive}" -Wl,--no-whole-archive -Wl,--export-dynamic
                   ${_lw_syslibs} Threads::Threads
    OUTPUT_VARIABLE _out)
  set(${result} ${_ok} PARENT_SCOPE)
  if(NOT _ok)
    file(WRITE "${_dir}/last-failure-${no_pie}.log" "${_out}")
  endif()
endfunction()

set(_lw_no_pie OFF)
if(LIBWSGI_STATIC_PYTHON_HOSTS)
  if(NOT LIBWSGI_STATIC_PYTHON_ARCHIVE OR NOT EXISTS "${LIBWSGI_STATIC_PYTHON_ARCHIVE}")
    if(NOT _lw_why)
      set(_lw_why "LIBWSGI_STATIC_PYTHON_ARCHIVE '${LIBWSGI_STATIC_PYTHON_ARCHIVE}' does not exist")
    endif()
    message(WARNING "LIBWSGI_STATIC_PYTHON_HOSTS: ${_lw_why}; the hosts link the shared libwsgi")
    set(_lw_use_static OFF)
  else()
    if(NOT DEFINED _LIBWSGI_STATIC_PYTHON_LINK OR
       NOT _LIBWSGI_STATIC_PYTHON_LINK_FOR STREQUAL LIBWSGI_STATIC_PYTHON_ARCHIVE)
      _lw_try_link("${LIBWSGI_STATIC_PYTHON_ARCHIVE}" OFF _pie)
      if(_pie)
        set(_how pie)
      else()
        _lw_try_link("${LIBWSGI_STATIC_PYTHON_ARCHIVE}" ON _nopie)
        if(_nopie)
          set(_how no-pie)
        else()
          set(_how fails)
        endif()
      endif()
      set(_LIBWSGI_STATIC_PYTHON_LINK ${_how} CACHE INTERNAL "pie, no-pie or fails")
      set(_LIBWSGI_STATIC_PYTHON_LINK_FOR "${LIBWSGI_STATIC_PYTHON_ARCHIVE}" CACHE INTERNAL "")
    endif()
    if(_LIBWSGI_STATIC_PYTHON_LINK STREQUAL "fails")
      message(WARNING "LIBWSGI_STATIC_PYTHON_HOSTS: a test program does not link with "
              "${LIBWSGI_STATIC_PYTHON_ARCHIVE} and ${_lw_syslibs} (see "
              "${CMAKE_BINARY_DIR}/CMakeFiles/static_python_try/); the hosts link the shared libwsgi")
      set(_lw_use_static OFF)
    else()
      set(_lw_use_static ON)
      if(_LIBWSGI_STATIC_PYTHON_LINK STREQUAL "no-pie")
        set(_lw_no_pie ON)
      endif()
    endif()
  endif()
else()
  set(_lw_use_static OFF)
endif()

add_library(wsgi_host_libwsgi INTERFACE)
if(_lw_use_static)
  # wsgi_static itself carries python3-embed (the shared libpython) for library users: link its
  # archive file, with its headers, and the static interpreter instead.
  add_dependencies(wsgi_host_libwsgi wsgi_static)
  target_include_directories(wsgi_host_libwsgi INTERFACE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include)
  target_compile_definitions(wsgi_host_libwsgi INTERFACE LIBWSGI_STATIC=1)
  target_link_libraries(wsgi_host_libwsgi INTERFACE
    $<TARGET_FILE:wsgi_static>
    -Wl,--whole-archive "${LIBWSGI_STATIC_PYTHON_ARCHIVE}" -Wl,--no-whole-archive
    -Wl,--export-dynamic ${_lw_syslibs} Threads::Threads)
  if(_lw_no_pie)
    target_link_options(wsgi_host_libwsgi INTERFACE -no-pie)
  endif()
  set(_lw_pie_note "")
  if(_lw_no_pie)
    set(_lw_pie_note ", -no-pie")
  endif()
  message(STATUS "Hosts link libwsgi.a + ${LIBWSGI_STATIC_PYTHON_ARCHIVE} (static Python${_lw_pie_note})")
else()
  target_link_libraries(wsgi_host_libwsgi INTERFACE wsgi)
  message(STATUS "Hosts link the shared libwsgi.so (and the shared libpython)")
endif()
set(LIBWSGI_HOSTS_STATIC_PYTHON ${_lw_use_static})
