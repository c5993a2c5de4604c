// A log-bucket latency histogram: exact below 32 ns, then 32 buckets per
// power of two (about 3% wide), so p99.9 is within a few percent without
// storing samples. max is exact.
#pragma once

#include <array>
#include <cstdint>

namespace ionet_bench {

class histogram {
 public:
  void add(std::uint64_t ns) noexcept;
  void merge(const histogram& other) noexcept;

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t max() const noexcept { return max_; }
  // The value at quantile q (0..1], in ns: the middle of its bucket,
  // never above max(). 0 when empty.
  std::uint64_t quantile(double q) const noexcept;

 private:
  static constexpr int sub_bits = 5;
  static constexpr std::uint64_t sub_count = 1u << sub_bits;
  static constexpr std::size_t bucket_count = (64 - sub_bits + 1) * sub_count;

  static std::size_t index(std::uint64_t v) noexcept;
  static std::uint64_t middle(std::size_t index) noexcept;

  std::array<std::uint64_t, bucket_count> buckets_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace ionet_bench
