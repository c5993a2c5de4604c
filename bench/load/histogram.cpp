#include "load/histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace ionet_bench {

std::size_t histogram::index(std::uint64_t v) noexcept {
  if (v < sub_count) return static_cast<std::size_t>(v);
  // bit_width is at most 64; libstdc++ 12 returns it as the argument's type
  // (int only since LWG 3656).
  const int e = static_cast<int>(std::bit_width(v)) - 1;  // >= sub_bits
  const std::uint64_t sub = (v >> (e - sub_bits)) & (sub_count - 1);
  return static_cast<std::size_t>(e - sub_bits + 1) * sub_count + sub;
}

std::uint64_t histogram::middle(std::size_t index) noexcept {
  if (index < sub_count) return index;
  const int e = static_cast<int>(index / sub_count) + sub_bits - 1;
  const std::uint64_t sub = index % sub_count;
  const std::uint64_t low = (sub_count + sub) << (e - sub_bits);
  const std::uint64_t width = std::uint64_t{1} << (e - sub_bits);
  return low + width / 2;
}

void histogram::add(std::uint64_t ns) noexcept {
  ++buckets_[index(ns)];
  ++count_;
  sum_ += ns;
  max_ = std::max(max_, ns);
}

void histogram::merge(const histogram& other) noexcept {
  for (std::size_t i = 0; i < bucket_count; ++i)
    buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
}

double histogram::mean() const noexcept {
  return count_ == 0 ? 0.0
                     : static_cast<double>(sum_) / static_cast<double>(count_);
}

std::uint64_t histogram::quantile(double q) const noexcept {
  if (count_ == 0) return 0;
  const double want = std::ceil(q * static_cast<double>(count_));
  const std::uint64_t rank =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(want));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(middle(i), max_);
  }
  return max_;
}

}  // namespace ionet_bench
