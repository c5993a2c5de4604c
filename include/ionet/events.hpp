/// \file
/// Events the engine delivers: a connection opened, a message arrived, a
/// connection closed, a connection may be sent to again, and (pull model)
/// work posted or a timer due. In the pull model
/// they come from engine::poll() and stay valid until engine::release();
/// inline, they are valid during the handler call.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

#include "ionet/export.hpp"

namespace ionet {

/// A connection's id: opaque, unique for the engine's lifetime (across
/// stop() and start() too), so a stale id never reaches a newer connection.
/// Compare it, hash it, keep it; the value-initialised id names no
/// connection.
enum class connection_id : std::uint64_t {};

/// The id as a number, for logs (it means nothing else).
constexpr std::uint64_t value_of(connection_id id) noexcept {
  return static_cast<std::uint64_t>(id);
}

/// How engine::close() ends a connection.
enum class close_mode : std::uint8_t {
  graceful,  ///< send what is queued, then shut down (FIN)
  reset,     ///< drop what is queued; the peer gets a reset (RST)
};

/// A peer address without OS types.
struct endpoint {
  std::array<std::uint8_t, 16> bytes{};  ///< IPv4 uses the first 4
  /// The port, in host byte order.
  std::uint16_t port = 0;
  /// Whether `bytes` holds an IPv6 address.
  bool v6 = false;
  /// "127.0.0.1:5000" or "[::1]:5000"
  IONET_API std::string to_string() const;
};

/// What an event says.
enum class event_type : std::uint8_t {
  connected,  ///< a connection opened; `peer` says who
  message,    ///< `data` holds a message
  closed,     ///< the connection is gone; `reason` says why
  /// send() answered queue_full or pool_exhausted for this connection, and
  /// it has drained to options::send_low_water since: send again. One per
  /// refusal (however many sends were refused meanwhile); none after closed.
  writable,
  /// Pull model: a function given to engine::post() or a timer's
  /// (engine::after(), every()); call event::run(), then release it.
  /// `conn` names the connection of post(conn, fn), else none.
  task,
};

namespace detail {
struct event_access;
}  // namespace detail

/// One event: what happened, to which connection, with what.
struct event {
  /// What happened.
  event_type type = event_type::message;
  /// The connection it happened to.
  connection_id conn{};
  /// message: the bytes of one whole message (length_prefix) or of one read
  /// (raw). Valid until released (pull) or until the handler returns.
  std::span<const std::byte> data;
  /// closed: why (an ionet::errc close reason, or a native error).
  std::error_code reason;
  /// connected: the peer's address.
  endpoint peer;

  /// The user's per-connection context, read when called, so a context set
  /// while handling `connected` is seen by the later events of the same
  /// batch. On `closed` it is handed back for the last time.
  void* context() const noexcept {
    return context_ ? context_->load(std::memory_order_acquire) : nullptr;
  }

  /// A task event: runs its function, on the calling thread (a cancelled
  /// timer's does nothing); once, before release(), which destroys it. An
  /// event of another type: does nothing. Like an inline handler, the
  /// function must not throw (the process ends if it does).
  IONET_API void run() const;

 private:
  // The engine's: where the context lives, and what release() gives back.
  friend struct detail::event_access;
  const std::atomic<void*>* context_ = nullptr;
  void* owner_ = nullptr;
};

}  // namespace ionet
