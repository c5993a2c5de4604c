#include "common/backpressure.hpp"

namespace ionet::detail {

void backpressure::start(std::uint64_t cap,
                         std::uint32_t per_connection) noexcept {
  cap_ = cap;
  per_connection_ = per_connection;
  total_.store(0, std::memory_order_relaxed);
}

}  // namespace ionet::detail
