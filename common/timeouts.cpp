#include "common/timeouts.hpp"

#include "ionet/error.hpp"

namespace ionet::detail {

void timeouts::start() noexcept {
  epoch_ms_ = 0;
  deadlines_.store(0, std::memory_order_relaxed);
  now_.store(1, std::memory_order_relaxed);
  tick();
}

namespace {

std::int64_t steady_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void timeouts::tick() noexcept {
  const std::int64_t ms = steady_ms();
  if (epoch_ms_ == 0) epoch_ms_ = ms - 1;
  // Wraps after 49 days; the checks use differences, valid up to 24 days.
  now_.store(static_cast<std::uint32_t>(ms - epoch_ms_) | 1u,
             std::memory_order_relaxed);
}

std::uint32_t timeouts::deadline_in(std::chrono::milliseconds ms) noexcept {
  if (ms.count() <= 0) return 0;
  deadlines_.fetch_add(1, std::memory_order_relaxed);
  // From the clock itself, not the coarse one (up to a tick behind), and
  // two milliseconds on: one for the part of this one already gone, one
  // for the clock's low bit, always set: the deadline is never early, only
  // up to a tick late.
  const auto now = static_cast<std::uint32_t>(steady_ms() - epoch_ms_);
  return (now + static_cast<std::uint32_t>(ms.count()) + 2) | 1u;
}

std::error_code timeouts::expired(const conn_state& st) const noexcept {
  const std::uint32_t now = now_.load(std::memory_order_relaxed);
  if (const std::uint32_t by = st.connect_by.load(std::memory_order_relaxed)) {
    return static_cast<std::int32_t>(now - by) >= 0
               ? make_error_code(errc::connect_timeout)
               : std::error_code{};
  }
  auto passed = [now](const std::atomic<std::uint32_t>& since,
                      std::chrono::milliseconds limit) {
    const std::uint32_t t = since.load(std::memory_order_relaxed);
    return limit.count() > 0 && t != 0 &&
           static_cast<std::int64_t>(static_cast<std::uint32_t>(now - t)) >=
               limit.count();
  };
  // A connection we stopped reading is not slow: its clock restarts when
  // reading resumes.
  if (!st.read_paused.load(std::memory_order_relaxed) &&
      passed(st.partial_since, read_)) {
    return make_error_code(errc::read_timeout);
  }
  if (passed(st.write_since, write_))
    return make_error_code(errc::write_timeout);
  if (passed(st.last_active, idle_)) return make_error_code(errc::idle_timeout);
  return {};
}

}  // namespace ionet::detail
