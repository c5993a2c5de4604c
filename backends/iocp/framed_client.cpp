// framed_client on Winsock: blocking I/O with select() for timeouts. The
// framing on top (write, read, read_exact) is in common/framed_client.cpp.
#include "ionet/framed_client.hpp"

#include <chrono>
#include <cstring>

#include "backends/iocp/winsock.hpp"
#include "common/engine_core.hpp"

namespace ionet {
namespace {

using clock = std::chrono::steady_clock;

std::error_code last_error() { return iocp::wsa_error(WSAGetLastError()); }

SOCKET sock(std::intptr_t fd) { return static_cast<SOCKET>(fd); }

// Waits until the socket is readable (or writable) or the deadline passes.
// Looks at least once, so data already waiting is found with no time left.
std::error_code wait_ready(SOCKET s, bool for_write,
                           clock::time_point deadline) {
  for (;;) {
    auto left =
        std::chrono::ceil<std::chrono::microseconds>(deadline - clock::now());
    if (left.count() < 0) left = std::chrono::microseconds(0);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(s, &set);
    fd_set errors;
    FD_ZERO(&errors);
    FD_SET(s, &errors);
    timeval tv;
    tv.tv_sec = static_cast<long>(left.count() / 1000000);
    tv.tv_usec = static_cast<long>(left.count() % 1000000);
    const int r = select(0, for_write ? nullptr : &set,
                         for_write ? &set : nullptr, &errors, &tv);
    if (r > 0) return {};
    if (r < 0) return last_error();
    if (clock::now() >= deadline)
      return std::make_error_code(std::errc::timed_out);
  }
}

}  // namespace

status framed_client::connect(const std::string& host, std::uint16_t port,
                              std::chrono::milliseconds timeout) {
  close();
  if (auto ec = iocp::winsock_init()) return {ec, "WSAStartup"};
  endpoint ep;
  if (!detail::parse_address(host, ep)) {
    return {errc::bad_address,
            "host '" + host + "' is not an IPv4 or IPv6 address literal"};
  }
  ep.port = port;
  sockaddr_storage ss;
  const int len = iocp::to_sockaddr(ep, ss);
  SOCKET s = ::socket(ss.ss_family, SOCK_STREAM, IPPROTO_TCP);
  if (s == INVALID_SOCKET) return {last_error(), "socket"};
  const auto deadline = clock::now() + timeout;
  u_long nonblocking = 1;
  ioctlsocket(s, FIONBIO, &nonblocking);
  if (::connect(s, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (WSAGetLastError() != WSAEWOULDBLOCK) {
      auto ec = last_error();
      closesocket(s);
      return {ec, "connect"};
    }
    if (auto ec = wait_ready(s, true, deadline)) {
      closesocket(s);
      return {ec, "connect"};
    }
    int err = 0;
    int elen = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&err), &elen);
    if (err != 0) {
      closesocket(s);
      // A reset here came after the handshake: the server took the
      // connection and reset it (a refusal at max_connections), as read()
      // would report it.
      if (err == WSAECONNRESET) return {errc::connection_reset, "connect"};
      return {iocp::wsa_error(err), "connect"};
    }
  }
  // Blocking from here on; timeouts come from select().
  nonblocking = 0;
  ioctlsocket(s, FIONBIO, &nonblocking);
  BOOL one = TRUE;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one),
             sizeof one);
  fd_ = static_cast<std::intptr_t>(s);
  return {};
}

std::error_code framed_client::write_raw(std::span<const std::byte> bytes) {
  if (fd_ == invalid) return make_error_code(errc::not_running);
  while (!bytes.empty()) {
    const int chunk =
        static_cast<int>(std::min<std::size_t>(bytes.size(), 1 << 30));
    const int n = ::send(sock(fd_), reinterpret_cast<const char*>(bytes.data()),
                         chunk, 0);
    if (n == SOCKET_ERROR) {
      const int err = WSAGetLastError();
      // Named as read_some names it.
      if (err == WSAECONNRESET || err == WSAECONNABORTED) {
        return make_error_code(errc::connection_reset);
      }
      return iocp::wsa_error(err);
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

std::error_code framed_client::read_some(std::span<std::byte> out,
                                         std::size_t& got,
                                         std::chrono::milliseconds timeout) {
  got = 0;
  if (fd_ == invalid) return make_error_code(errc::not_running);
  if (auto ec = wait_ready(sock(fd_), false, clock::now() + timeout)) return ec;
  const int chunk =
      static_cast<int>(std::min<std::size_t>(out.size(), 1 << 30));
  const int n =
      ::recv(sock(fd_), reinterpret_cast<char*>(out.data()), chunk, 0);
  if (n > 0) {
    got = static_cast<std::size_t>(n);
    return {};
  }
  if (n == 0) return make_error_code(errc::peer_closed);
  const int err = WSAGetLastError();
  if (err == WSAECONNRESET || err == WSAECONNABORTED) {
    return make_error_code(errc::connection_reset);
  }
  return iocp::wsa_error(err);
}

std::error_code framed_client::shutdown_send() {
  if (fd_ == invalid) return make_error_code(errc::not_running);
  if (::shutdown(sock(fd_), SD_SEND) != 0) return last_error();
  return {};
}

void framed_client::reset() noexcept {
  if (fd_ == invalid) return;
  linger l{1, 0};
  setsockopt(sock(fd_), SOL_SOCKET, SO_LINGER,
             reinterpret_cast<const char*>(&l), sizeof l);
  close();
}

void framed_client::close() noexcept {
  if (fd_ == invalid) return;
  closesocket(sock(fd_));
  fd_ = invalid;
}

}  // namespace ionet
