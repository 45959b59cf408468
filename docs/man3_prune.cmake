# Keeps the API's pages of Doxygen's man output (section 3) and nothing else. Run by the 'docs'
# target after Doxygen:  cmake -DMAN3_DIR=<build>/docs/man/man3 -P man3_prune.cmake
#
# Doxygen writes a page for every documented name: the functions, types, macros and enum values
# (kept: all carry the wsgi_/asgi_/libwsgi_ prefixes), but also one per struct field ("flags",
# "log", "name"... which would shadow other libraries' pages, log(3) among them) and one per guide
# ("errors", "threading": the guides are HTML). Those are removed. The header pages are renamed
# from "asgi.h.3" to "libwsgi_asgi.h.3" (libwsgi.h.3 stays), and every ".so" link to them follows,
# so that nothing installed into man3 is named after a generic word.
if(NOT MAN3_DIR OR NOT IS_DIRECTORY "${MAN3_DIR}")
  message(FATAL_ERROR "man3_prune.cmake: MAN3_DIR '${MAN3_DIR}' is not a directory")
endif()

file(GLOB _pages RELATIVE "${MAN3_DIR}" "${MAN3_DIR}/*")
set(_headers "")
foreach(_p IN LISTS _pages)
  if(_p MATCHES "^([a-z]+)\\.h\\.3$")
    if(NOT _p STREQUAL "libwsgi.h.3")
      list(APPEND _headers "${CMAKE_MATCH_1}")
    endif()
  elseif(NOT _p MATCHES "^(wsgi_|asgi_|libwsgi_|WSGI_|ASGI_|LIBWSGI_)[A-Za-z0-9_]*\\.3$")
    file(REMOVE "${MAN3_DIR}/${_p}")
  endif()
endforeach()

foreach(_h IN LISTS _headers)
  file(RENAME "${MAN3_DIR}/${_h}.h.3" "${MAN3_DIR}/libwsgi_${_h}.h.3")
endforeach()

# Point the links (".so man3/asgi.h.3") at the renamed pages. And Doxygen (1.9) writes a double
# quote as ' in man output, so a comment that starts with a quoted word ("http" or "https") starts
# a line with ', which roff takes for a control line: such lines get a leading \& (zero width).
file(GLOB _kept "${MAN3_DIR}/*.3")
set(_n 0)
foreach(_f IN LISTS _kept)
  file(READ "${_f}" _text)
  set(_new "${_text}")
  if(_new MATCHES "^\\.so man3/([a-z]+)\\.h\\.3")
    set(_h "${CMAKE_MATCH_1}")
    if(NOT _h STREQUAL "libwsgi")
      string(REPLACE ".so man3/${_h}.h.3" ".so man3/libwsgi_${_h}.h.3" _new "${_new}")
    endif()
  endif()
  string(REGEX REPLACE "\n'" "\n\\\\&'" _new "${_new}")
  if(NOT _new STREQUAL _text)
    file(WRITE "${_f}" "${_new}")
  endif()
  math(EXPR _n "${_n} + 1")
endforeach()
if(_n LESS 50)
  message(FATAL_ERROR "man3_prune.cmake: only ${_n} pages left in ${MAN3_DIR}")
endif()
