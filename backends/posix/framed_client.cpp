// framed_client on POSIX sockets: blocking I/O with poll() for timeouts.
// The framing on top (write, read, read_exact) is in common/framed_client.cpp.
#include "ionet/framed_client.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/engine_core.hpp"

namespace ionet {
namespace {

using clock = std::chrono::steady_clock;

std::error_code last_error() { return {errno, std::system_category()}; }

// Waits until fd is ready for `events` or the deadline passes. Looks at
// least once, so data already waiting is found even with no time left.
std::error_code wait_ready(int fd, short events, clock::time_point deadline) {
  for (;;) {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return {};
    if (r < 0 && errno != EINTR) return last_error();
    if (clock::now() >= deadline)
      return std::make_error_code(std::errc::timed_out);
  }
}

}  // namespace

status framed_client::connect(const std::string& host, std::uint16_t port,
                              std::chrono::milliseconds timeout) {
  close();
  endpoint ep;
  if (!detail::parse_address(host, ep)) {
    return {errc::bad_address,
            "host '" + host + "' is not an IPv4 or IPv6 address literal"};
  }
  sockaddr_storage ss{};
  socklen_t len;
  if (ep.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    std::memcpy(&a->sin6_addr, ep.bytes.data(), 16);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, ep.bytes.data(), 4);
    len = sizeof *a;
  }
  int fd =
      ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return {last_error(), "socket"};
  const auto deadline = clock::now() + timeout;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS) {
      auto ec = last_error();
      ::close(fd);
      return {ec, "connect"};
    }
    if (auto ec = wait_ready(fd, POLLOUT, deadline)) {
      ::close(fd);
      return {ec, "connect"};
    }
    int err = 0;
    socklen_t elen = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
    if (err != 0) {
      ::close(fd);
      // A reset here came after the handshake: the server took the
      // connection and reset it (a refusal at max_connections), as read()
      // would report it.
      if (err == ECONNRESET) return {errc::connection_reset, "connect"};
      return {std::error_code(err, std::system_category()), "connect"};
    }
  }
  // Blocking from here on; timeouts come from poll().
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fd_ = fd;
  return {};
}

std::error_code framed_client::write_raw(std::span<const std::byte> bytes) {
  if (fd_ == invalid) return make_error_code(errc::not_running);
  const int fd = static_cast<int>(fd_);
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Named as read_some names it. Linux reports a reset once: to the
      // call that meets it first, write or read; the other then sees EOF.
      if (errno == ECONNRESET) return make_error_code(errc::connection_reset);
      return last_error();
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
  const int fd = static_cast<int>(fd_);
  if (auto ec = wait_ready(fd, POLLIN, clock::now() + timeout)) return ec;
  for (;;) {
    const ssize_t n = ::recv(fd, out.data(), out.size(), 0);
    if (n > 0) {
      got = static_cast<std::size_t>(n);
      return {};
    }
    if (n == 0) return make_error_code(errc::peer_closed);
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return make_error_code(errc::connection_reset);
    return last_error();
  }
}

std::error_code framed_client::shutdown_send() {
  if (fd_ == invalid) return make_error_code(errc::not_running);
  if (::shutdown(static_cast<int>(fd_), SHUT_WR) != 0) return last_error();
  return {};
}

void framed_client::reset() noexcept {
  if (fd_ == invalid) return;
  linger l{1, 0};
  ::setsockopt(static_cast<int>(fd_), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close();
}

void framed_client::close() noexcept {
  if (fd_ == invalid) return;
  ::close(static_cast<int>(fd_));
  fd_ = invalid;
}

}  // namespace ionet
