# Builds consumer.cpp with nothing but what `pkg-config --cflags --libs ionet`
# says (PKG_CONFIG_PATH at the scratch install prefix), then runs it: a user
# without CMake can build against the installed package. Run by ctest
# (cmake -P) after the package-install test.
#
#   cmake -DPKG_CONFIG=pkg-config -DPC_DIR=<prefix>/lib/pkgconfig
#         -DCXX=c++ -DSOURCE=consumer.cpp -DOUT=<dir> [-DSTATIC=ON]
#         [-DEXTRA_FLAGS=-fsanitize=...] -P pkg_config_consumer.cmake
foreach(var PKG_CONFIG PC_DIR CXX SOURCE OUT)
  if(NOT ${var})
    message(FATAL_ERROR "pkg_config_consumer: -D${var}=... is required")
  endif()
endforeach()

set(ENV{PKG_CONFIG_PATH} "${PC_DIR}")
set(args --cflags --libs)
if(STATIC)
  # A static libionet needs its private dependencies on the link line.
  list(APPEND args --static)
endif()
execute_process(COMMAND ${PKG_CONFIG} ${args} ionet
  OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg_config_consumer: pkg-config failed (${rc})")
endif()
list(JOIN args " " shown)
message(STATUS "pkg-config ${shown} ionet: ${flags}")
separate_arguments(flags UNIX_COMMAND "${flags}")
separate_arguments(extra UNIX_COMMAND "${EXTRA_FLAGS}")

file(MAKE_DIRECTORY "${OUT}")
set(program "${OUT}/consumer")
execute_process(
  COMMAND ${CXX} -std=c++20 ${extra} "${SOURCE}" ${flags} -o "${program}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg_config_consumer: compiling ${SOURCE} failed (${rc})")
endif()

# A shared libionet is found at run time through the -L directories.
set(dirs "")
foreach(flag IN LISTS flags)
  if(flag MATCHES "^-L(.+)")
    list(APPEND dirs "${CMAKE_MATCH_1}")
  endif()
endforeach()
list(JOIN dirs ":" dirs)
set(ENV{LD_LIBRARY_PATH} "${dirs}")
execute_process(COMMAND "${program}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg_config_consumer: the consumer failed (${rc})")
endif()
