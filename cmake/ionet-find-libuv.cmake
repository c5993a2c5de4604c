# Finds libuv for the libuv backend and the libuv peer:
#   ionet_find_libuv(<out-var>)
# sets <out-var> to the target to link, or to "" when libuv was not found.
# libuv's own CMake package comes first (vcpkg ships it, and so does libuv
# built with CMake: libuv::uv is the shared library, libuv::uv_a the static
# one), then pkg-config (Debian's libuv1-dev has only libuv.pc).
function(ionet_find_libuv out)
  find_package(libuv CONFIG QUIET)
  if(TARGET libuv::uv_a AND (NOT TARGET libuv::uv OR NOT BUILD_SHARED_LIBS))
    set(${out} libuv::uv_a PARENT_SCOPE)
    return()
  elseif(TARGET libuv::uv)
    set(${out} libuv::uv PARENT_SCOPE)
    return()
  endif()
  if(NOT TARGET PkgConfig::LIBUV)
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(LIBUV QUIET IMPORTED_TARGET GLOBAL libuv>=1.40)
    endif()
  endif()
  if(TARGET PkgConfig::LIBUV)
    set(${out} PkgConfig::LIBUV PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()
