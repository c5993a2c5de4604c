// The bytes the load generator sends, and checks when they come back.
//
// Payload byte i of message m of connection c is table[(start(c, m) + i) %
// period]: a fixed pseudo-random table of prime length read from an offset
// that depends on (c, m). A shifted, repeated, dropped or foreign byte run
// therefore mismatches almost surely, and both sides are plain copies and
// compares over the table, cheap enough to check every byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ionet_bench {

class pattern {
 public:
  static constexpr std::size_t period = 65521;  // prime: no short cycle

  pattern();

  static std::size_t start(std::uint32_t conn, std::uint64_t msg) noexcept;

  // Writes payload bytes [from, from + n) of message (conn, msg).
  void fill(std::uint32_t conn, std::uint64_t msg, std::size_t from,
            std::uint8_t* out, std::size_t n) const noexcept;

  // How many of `n` bytes at `in` differ from payload bytes [from, from + n)
  // of message (conn, msg).
  std::size_t mismatches(std::uint32_t conn, std::uint64_t msg,
                         std::size_t from, const std::uint8_t* in,
                         std::size_t n) const noexcept;

 private:
  // Two periods back to back, so a run of up to `period` bytes starting
  // anywhere in the first is contiguous.
  std::vector<std::uint8_t> table_;
};

}  // namespace ionet_bench
