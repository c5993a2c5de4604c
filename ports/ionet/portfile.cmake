# vcpkg overlay port for ionet, built from the checkout this file sits in:
#   vcpkg install ionet --overlay-ports=<checkout>/ports
# (or list <checkout>/ports under "overlay-ports" in a project's
# vcpkg-configuration.json). The backend is the platform's default: IOCP
# on Windows, libuv elsewhere. BUILD_SHARED_LIBS follows the triplet's
# library linkage (vcpkg_cmake_configure passes it).
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

if(VCPKG_TARGET_IS_WINDOWS)
    set(backend iocp)
else()
    set(backend libuv)
endif()

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DIONET_BACKEND=${backend}
        -DIONET_BUILD_TESTS=OFF
        -DIONET_BUILD_BENCH=OFF
        -DIONET_BUILD_EXAMPLES=OFF
        -DIONET_INSTALL=ON
        # The license goes where vcpkg keeps a port's files (the copyright
        # file below is the one vcpkg reads).
        -DCMAKE_INSTALL_DOCDIR=share/${PORT}
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH lib/cmake/ionet)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE
    "${CURRENT_PACKAGES_DIR}/debug/include"
    "${CURRENT_PACKAGES_DIR}/debug/share")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
