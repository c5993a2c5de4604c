#include "common/timeouts.hpp"

#include "ionet/error.hpp"

namespace ionet::detail {

void timeouts::start() noexcept {
  epoch_ms_ = 0;
  now_.store(1, std::memory_order_relaxed);
  tick();
}

void timeouts::tick() noexcept {
  const std::int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (epoch_ms_ == 0) epoch_ms_ = ms - 1;
  // Wraps after 49 days; the checks use differences, valid up to 24 days.
  now_.store(static_cast<std::uint32_t>(ms - epoch_ms_) | 1u,
             std::memory_order_relaxed);
}

std::error_code timeouts::expired(const conn_state& st) const noexcept {
  const std::uint32_t now = now_.load(std::memory_order_relaxed);
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
