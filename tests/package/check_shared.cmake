# Checks an installed shared libionet (cmake -P, run by ctest in a shared
# build): its soname carries the version (libionet.so.MAJOR.MINOR), and it
# exports only the public API, no ionet::detail nor backend symbols.
#
#   cmake -DLIBRARY=<prefix>/lib/libionet.so -DSONAME=libionet.so.0.1
#         -DNM=nm -DREADELF=readelf -P check_shared.cmake
foreach(var LIBRARY SONAME NM READELF)
  if(NOT ${var})
    message(FATAL_ERROR "check_shared: -D${var}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${LIBRARY}")
  message(FATAL_ERROR "check_shared: ${LIBRARY} is not installed")
endif()

execute_process(COMMAND ${READELF} -d "${LIBRARY}"
  OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check_shared: ${READELF} -d failed (${rc})")
endif()
if(NOT dynamic MATCHES "Library soname: \\[([^]]*)\\]")
  message(FATAL_ERROR "check_shared: ${LIBRARY} has no soname")
endif()
set(found_soname "${CMAKE_MATCH_1}")
if(NOT found_soname STREQUAL SONAME)
  message(FATAL_ERROR "check_shared: soname is '${found_soname}', expected '${SONAME}'")
endif()

execute_process(COMMAND ${NM} -D --defined-only -C "${LIBRARY}"
  OUTPUT_VARIABLE symbols RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "check_shared: ${NM} -D failed (${rc})")
endif()
string(REPLACE "\n" ";" lines "${symbols}")
set(exported 0)
set(public 0)
set(leaked "")
foreach(line IN LISTS lines)
  if(line STREQUAL "")
    continue()
  endif()
  math(EXPR exported "${exported} + 1")
  if(line MATCHES "ionet::(detail|libuv|uring|iocp|posix)::")
    list(APPEND leaked "${line}")
  elseif(line MATCHES "ionet::")
    math(EXPR public "${public} + 1")
  endif()
endforeach()
list(LENGTH leaked n_leaked)
if(n_leaked GREATER 0)
  list(JOIN leaked "\n  " text)
  message(FATAL_ERROR
    "check_shared: ${n_leaked} internal symbols exported by ${LIBRARY}:\n  ${text}")
endif()
message(STATUS "check_shared: soname ${found_soname}; ${exported} symbols exported, "
  "${public} of them ionet's public API, none internal")
