"""Conan 2 recipe for ionet.

    conan create .                                # the platform's backend
    conan create . -o "ionet/*:backend=uring"     # libuv, uring or iocp
    conan create . -o "ionet/*:shared=True"

Option backend picks the engine backend at configure time (IONET_BACKEND);
"default" is iocp on Windows and libuv elsewhere.
"""
import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, rmdir
from conan.tools.gnu import PkgConfigDeps

required_conan_version = ">=2.0"


class IonetConan(ConanFile):
    name = "ionet"
    version = "0.1.0"
    description = "C++20 TCP server engine with IOCP, libuv and io_uring backends"
    license = "MIT"
    topics = ("networking", "tcp", "server", "iocp", "libuv", "io_uring")
    package_type = "library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "shared": [True, False],
        "fPIC": [True, False],
        "backend": ["default", "libuv", "uring", "iocp"],
    }
    default_options = {
        "shared": False,
        "fPIC": True,
        "backend": "default",
    }
    exports_sources = (
        "CMakeLists.txt", "LICENSE", "cmake/*", "include/*", "common/*", "backends/*",
    )

    @property
    def _backend(self):
        if self.options.backend == "default":
            return "iocp" if self.settings.os == "Windows" else "libuv"
        return str(self.options.backend)

    def config_options(self):
        if self.settings.os == "Windows":
            del self.options.fPIC

    def configure(self):
        if self.options.shared:
            self.options.rm_safe("fPIC")

    def layout(self):
        cmake_layout(self)

    def validate(self):
        check_min_cppstd(self, 20)
        if self._backend == "iocp" and self.settings.os != "Windows":
            raise ConanInvalidConfiguration("backend=iocp needs Windows")
        if self._backend == "uring" and self.settings.os != "Linux":
            raise ConanInvalidConfiguration("backend=uring needs Linux (io_uring)")

    def requirements(self):
        if self._backend == "libuv":
            self.requires("libuv/[>=1.40 <2]")
        elif self._backend == "uring":
            self.requires("liburing/[>=2.2]")

    def build_requirements(self):
        self.tool_requires("cmake/[>=3.25 <4]")
        if self._backend == "uring":
            self.tool_requires("pkgconf/[>=1.7]")

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["IONET_BACKEND"] = self._backend
        tc.cache_variables["IONET_BUILD_TESTS"] = False
        tc.cache_variables["IONET_BUILD_BENCH"] = False
        tc.cache_variables["IONET_BUILD_EXAMPLES"] = False
        tc.cache_variables["IONET_INSTALL"] = True
        tc.generate()
        deps = CMakeDeps(self)
        if self._backend == "libuv":
            # ionet looks for libuv's own CMake package first and links
            # libuv::uv (or libuv::uv_a); name the target the same way.
            deps.set_property("libuv", "cmake_target_name", "libuv::uv")
        deps.generate()
        if self._backend == "uring":
            # liburing is found through pkg-config (liburing.pc); the
            # toolchain puts the generators folder on PKG_CONFIG_PATH.
            PkgConfigDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        cmake = CMake(self)
        cmake.install()
        # Consumers get Conan's own CMake and pkg-config files (package_info).
        rmdir(self, os.path.join(self.package_folder, "lib", "cmake"))
        rmdir(self, os.path.join(self.package_folder, "lib", "pkgconfig"))
        rmdir(self, os.path.join(self.package_folder, "share"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "ionet")
        self.cpp_info.set_property("cmake_target_name", "ionet::ionet")
        self.cpp_info.set_property("pkg_config_name", "ionet")
        self.cpp_info.libs = ["ionet"]
        if not self.options.shared:
            self.cpp_info.defines = ["IONET_STATIC_DEFINE"]
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
        elif self.settings.os == "Windows":
            self.cpp_info.system_libs = ["ws2_32", "mswsock"]
