#include "load/pattern.hpp"

#include <algorithm>
#include <cstring>

namespace ionet_bench {
namespace {

// splitmix64: a good 64-bit mix, used only to make the table and offsets.
std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

pattern::pattern() : table_(2 * period) {
  std::uint64_t state = 0x696f6e6574ull;  // "ionet"
  for (std::size_t i = 0; i < period; ++i) {
    state = mix(state);
    table_[i] = static_cast<std::uint8_t>(state >> 56);
  }
  std::copy_n(table_.begin(), period, table_.begin() + period);
}

std::size_t pattern::start(std::uint32_t conn, std::uint64_t msg) noexcept {
  return static_cast<std::size_t>(mix((std::uint64_t{conn} << 40) ^ msg) %
                                  period);
}

void pattern::fill(std::uint32_t conn, std::uint64_t msg, std::size_t from,
                   std::uint8_t* out, std::size_t n) const noexcept {
  std::size_t at = (start(conn, msg) + from) % period;
  while (n > 0) {
    const std::size_t run = std::min(n, period);
    std::memcpy(out, table_.data() + at, run);
    out += run;
    n -= run;
    // `run` is either all that was left or exactly one period, which
    // brings the table back to the same offset.
  }
}

std::size_t pattern::mismatches(std::uint32_t conn, std::uint64_t msg,
                                std::size_t from, const std::uint8_t* in,
                                std::size_t n) const noexcept {
  const std::size_t at = (start(conn, msg) + from) % period;
  std::size_t bad = 0;
  while (n > 0) {
    const std::size_t run = std::min(n, period);
    const std::uint8_t* want = table_.data() + at;
    if (std::memcmp(in, want, run) != 0) {
      for (std::size_t i = 0; i < run; ++i) bad += in[i] != want[i];
    }
    in += run;
    n -= run;
  }
  return bad;
}

}  // namespace ionet_bench
