// What a connection id is made of: its slot's index in the low 32 bits and
// the slot's generation in the high 32 bits (the generation moves on each
// time the slot is freed, so an old id never resolves again). The public
// header keeps ids opaque; the engine and its tests use these.
#pragma once

#include <cstdint>

#include "ionet/events.hpp"

namespace ionet::detail {

constexpr std::uint32_t slot_of(connection_id id) noexcept {
  return static_cast<std::uint32_t>(value_of(id));
}
constexpr std::uint32_t generation_of(connection_id id) noexcept {
  return static_cast<std::uint32_t>(value_of(id) >> 32);
}
constexpr connection_id make_connection_id(std::uint32_t slot,
                                           std::uint32_t generation) noexcept {
  return connection_id{(std::uint64_t{generation} << 32) | slot};
}

}  // namespace ionet::detail
