/// \file
/// Errors: every fallible ionet call reports a std::error_code. Values of
/// ionet::errc live in ionet::error_category(); native (OS or libuv) codes stay
/// in their own categories so nothing is lost in translation.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "ionet/export.hpp"

namespace ionet {

/// ionet's error codes: what send(), close(), set_context(), connect() and
/// start() answer, and the close reasons a closed event carries.
enum class errc : int {
  // send(), close(), set_context()
  stale_connection = 1,  ///< the id names a connection that no longer exists
  queue_full,  ///< the connection's queued bytes would pass max_queued_bytes
  /// a message above max_message_bytes (sent or received); in raw mode, a
  /// send above max_queued_bytes
  message_too_large,
  pool_exhausted,  ///< no free slice in the engine's slab pool
  closing,         ///< close() was already called on this connection
  // start()
  not_running,      ///< the engine is not started, or already stopped
  already_running,  ///< start() called twice
  bad_option,       ///< an option is out of range; the status message names it
  address_in_use,   ///< the port is taken
  bad_address,      ///< the host is not an IPv4 or IPv6 literal
  out_of_memory,    ///< pre-allocation at start failed; or a close reason
  unsupported,      ///< the backend cannot do this here
  // Close reasons carried by the closed event.
  closed_by_user,  ///< close() was called
  peer_closed,     ///< the peer shut down its side (EOF)
  /// the peer reset it, or the network failed it (other I/O errors close
  /// with their native code)
  connection_reset,
  engine_stopped,  ///< stop() closed the connection
  idle_timeout,    ///< no byte moved either way for options::idle_timeout
  read_timeout,    ///< a message left partial for options::read_timeout
  /// queued bytes made no progress for options::write_timeout
  write_timeout,
  // engine::connect(): the closed event of a connection that never opened.
  connection_refused,  ///< nothing listens there (the peer answered a reset)
  /// the connection did not open within its connect timeout
  connect_timeout,
  host_unreachable,  ///< no route to the address (net or host unreachable)
  /// engine::connect() refused: max_connections are open already
  connection_limit,
};

/// The category of ionet::errc values ("ionet").
IONET_API const std::error_category& error_category() noexcept;

/// Makes a std::error_code of `e`, so an errc converts to one.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// An error code with a human sentence, for calls such as start() whose
/// failure needs to say which option or address was wrong and why.
struct status {
  /// What went wrong; empty (no error) on success.
  std::error_code code;
  /// Which option or address was wrong and why; may be empty.
  std::string message;

  /// Success.
  status() = default;
  /// The outcome `c`, explained by `m`.
  status(std::error_code c, std::string m = {})  // NOLINT: implicit by design
      : code(c), message(std::move(m)) {}
  /// A failure: `e`, explained by `m`.
  status(errc e, std::string m = {})  // NOLINT: implicit by design
      : code(make_error_code(e)), message(std::move(m)) {}

  /// True when there was no error.
  bool ok() const noexcept { return !code; }
  /// The same as ok().
  explicit operator bool() const noexcept { return ok(); }
  /// "bad_option: slice_bytes must be at least 16 (got 0)"
  IONET_API std::string to_string() const;
};

}  // namespace ionet

/// Lets an ionet::errc convert to a std::error_code.
template <>
struct std::is_error_code_enum<ionet::errc> : std::true_type {};
