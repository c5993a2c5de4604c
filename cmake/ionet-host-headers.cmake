# Header-only Debian packages (Catch2, CLI11, nlohmann-json) for a cross
# build. They live in the build machine's /usr/include, which a cross
# compiler must not search (glibc's headers are there too), so only the
# package's own folder is copied into the build tree and offered as an
# INTERFACE target of the usual name.
#
#   ionet_host_headers(<target> <header under /usr/include>)
#   e.g. ionet_host_headers(Catch2::Catch2 catch2/catch.hpp)
function(ionet_host_headers target header)
  if(TARGET ${target})
    return()
  endif()
  string(MAKE_C_IDENTIFIER "${header}" var)
  find_path(ionet_host_${var} ${header} PATHS /usr/include
            NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
  if(NOT ionet_host_${var})
    message(FATAL_ERROR "${header} not found in /usr/include: run ci/bootstrap")
  endif()
  string(REGEX REPLACE "/.*" "" top "${header}")
  set(dest ${CMAKE_BINARY_DIR}/host-headers)
  file(COPY ${ionet_host_${var}}/${top} DESTINATION ${dest})
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_include_directories(${target} SYSTEM INTERFACE ${dest})
endfunction()
