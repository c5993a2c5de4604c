/// \file
/// A blocking TCP client that speaks ionet's framing (the seed's TCPWrite /
/// TCPRead): for tests, examples and tools, not for servers. One thread uses
/// one client at a time.
///
/// Portability: POSIX sockets on Linux and macOS, Winsock on Windows.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "ionet/error.hpp"
#include "ionet/export.hpp"

namespace ionet {

/// A blocking client for ionet's framing: for tests, examples and tools.
class IONET_API framed_client {
 public:
  /// A client not connected yet.
  framed_client() = default;
  /// Closes the connection, if open.
  ~framed_client();
  /// Takes over `other`'s connection; `other` is left closed.
  framed_client(framed_client&& other) noexcept;
  /// Closes this client's connection, then takes over `other`'s.
  framed_client& operator=(framed_client&& other) noexcept;
  framed_client(const framed_client&) = delete;
  framed_client& operator=(const framed_client&) = delete;

  /// Connects to an IPv4 or IPv6 literal. TCP_NODELAY is set.
  /// A server that takes the connection and resets it at once (as ionet
  /// refuses clients beyond max_connections) may make connect() itself fail
  /// with errc::connection_reset, the error read() gives for a reset.
  status connect(const std::string& host, std::uint16_t port,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

  /// Sends one message: a 4-byte big-endian length, then the bytes.
  std::error_code write(std::span<const std::byte> message);
  /// Sends bytes as they are (raw framing, or hand-made frames).
  /// Both fail with errc::connection_reset when the peer reset the
  /// connection: a reset is reported once, to whichever call, write or
  /// read, meets it first (the other may then see errc::peer_closed).
  std::error_code write_raw(std::span<const std::byte> bytes);

  /// Reads one whole message into `out`. Errors: errc::peer_closed on EOF,
  /// errc::message_too_large if the header announces more than `max_bytes`,
  /// std::errc::timed_out when nothing complete arrived in time. A timeout
  /// in the middle of a message leaves the stream out of step: close the
  /// client then.
  std::error_code read(
      std::vector<std::byte>& out,
      std::chrono::milliseconds timeout = std::chrono::seconds(5),
      std::uint32_t max_bytes = 64u << 20);
  /// Reads exactly out.size() bytes.
  std::error_code read_exact(
      std::span<std::byte> out,
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Reads whatever is available (at least one byte); `got` tells how many.
  std::error_code read_some(
      std::span<std::byte> out, std::size_t& got,
      std::chrono::milliseconds timeout = std::chrono::seconds(5));

  /// Half-close: no more writes from us; reads still work.
  std::error_code shutdown_send();
  /// Abortive close: the peer sees a reset (SO_LINGER 0).
  void reset() noexcept;
  /// Closes the connection, if open.
  void close() noexcept;
  /// True from a successful connect() until close() or reset().
  bool is_open() const noexcept { return fd_ != invalid; }

 private:
  static constexpr std::intptr_t invalid = -1;
  std::intptr_t fd_ = invalid;
};

}  // namespace ionet
