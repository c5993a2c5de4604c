#include "common/delivery.hpp"

namespace ionet::detail {

void delivery::make(std::size_t capacity, std::uint32_t slots) {
  queue_ = std::make_unique<event_queue>(capacity, slots);
}

std::size_t delivery::poll(std::span<event> out,
                           std::chrono::milliseconds timeout) {
  if (inline_mode() || !queue_) return 0;
  return queue_->pop(out, timeout);
}

}  // namespace ionet::detail
