// A log-bucket latency histogram: exact below 64 ns, then 32 buckets per
// power of two, each at most 1/32 of its lower edge wide. A quantile is
// reported as the middle of its bucket, so it is within 1/64 (1.6%) of a
// sample at that rank, without storing samples. max and mean are exact.
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
  double mean() const noexcept;  // 0 when empty
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
  std::uint64_t sum_ = 0;  // wraps only after 584 years of latency
};

}  // namespace ionet_bench
