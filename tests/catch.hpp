// Catch2 for ionet's tests, 2.x (Debian 12) or 3.x (vcpkg, Conan, newer
// distributions): tests/CMakeLists.txt finds whichever is installed and says
// which in IONET_CATCH2_MAJOR. Test files include this header, never
// Catch2's own, and write Catch2 3's names.
#pragma once

#if IONET_CATCH2_MAJOR >= 3
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#else
#include <catch2/catch.hpp>
#include <string>

namespace Catch::Matchers {
// Catch2 3 renamed the substring matcher; 2.x calls it Contains.
inline StdString::ContainsMatcher ContainsSubstring(
    const std::string& str, CaseSensitive::Choice cs = CaseSensitive::Yes) {
  return Contains(str, cs);
}
}  // namespace Catch::Matchers
#endif
