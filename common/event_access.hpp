// The engine's side of an event: the fields include/ionet/events.hpp keeps
// private, so users cannot forge what release() gives back.
#pragma once

#include <atomic>

#include "ionet/events.hpp"

namespace ionet::detail {

struct event_access {
  // Where the connection's context lives (event::context() reads it).
  static void set_context(event& e, const std::atomic<void*>* where) noexcept {
    e.context_ = where;
  }
  static const std::atomic<void*>* context_of(const event& e) noexcept {
    return e.context_;
  }
  // What a message event holds: its buffer, given back on release.
  static void set_owner(event& e, void* owner) noexcept { e.owner_ = owner; }
  static void* owner(const event& e) noexcept { return e.owner_; }
};

}  // namespace ionet::detail
