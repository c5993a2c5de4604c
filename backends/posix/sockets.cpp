#include "backends/posix/sockets.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ionet::posix {
namespace {

socklen_t to_sockaddr(const endpoint& ep, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  if (ep.v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(ep.port);
    std::memcpy(&a->sin6_addr, ep.bytes.data(), 16);
    return sizeof(sockaddr_in6);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(ep.port);
  std::memcpy(&a->sin_addr, ep.bytes.data(), 4);
  return sizeof(sockaddr_in);
}

endpoint from_sockaddr(const sockaddr_storage& ss) {
  endpoint ep;
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ep.v6 = true;
    std::memcpy(ep.bytes.data(), &a->sin6_addr, 16);
    ep.port = ntohs(a->sin6_port);
  } else if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    std::memcpy(ep.bytes.data(), &a->sin_addr, 4);
    ep.port = ntohs(a->sin_port);
  }
  return ep;
}

}  // namespace

status open_listener(const endpoint& ep, const options& o, int type_flags,
                     int& fd_out, std::uint16_t& port) {
  sockaddr_storage ss{};
  const socklen_t len = to_sockaddr(ep, ss);
  const int fd =
      ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  if (fd < 0)
    return {std::error_code(errno, std::system_category()), "socket()"};
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (o.reuse_port &&
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    const std::error_code ec(errno, std::system_category());
    ::close(fd);
    return {ec, "SO_REUSEPORT"};
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int err = errno;
    ::close(fd);
    const std::string where = ep.to_string();
    if (err == EADDRINUSE)
      return {errc::address_in_use, where + " is already in use"};
    if (err == EADDRNOTAVAIL) {
      return {errc::bad_address,
              "host " + o.host + " is not an address of this machine"};
    }
    if (err == EACCES) {
      return {errc::bad_option,
              "port " + std::to_string(ep.port) + " needs privileges"};
    }
    return {std::error_code(err, std::system_category()), "bind " + where};
  }
  if (::listen(fd, static_cast<int>(o.backlog)) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EADDRINUSE)
      return {errc::address_in_use, ep.to_string() + " is already in use"};
    return {std::error_code(err, std::system_category()), "listen"};
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  port = from_sockaddr(bound).port;
  fd_out = fd;
  return {};
}

std::optional<endpoint> address_of(int fd, bool local) {
  if (fd < 0) return std::nullopt;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((local ? ::getsockname(fd, sa, &len) : ::getpeername(fd, sa, &len)) != 0)
    return std::nullopt;
  return from_sockaddr(ss);
}

std::error_code close_reason_of(int err) noexcept {
  if (err == ECONNRESET || err == EPIPE || err == ECONNABORTED ||
      err == ETIMEDOUT || err == ENOTCONN || err == ECANCELED) {
    return make_error_code(errc::connection_reset);
  }
  return {err, std::system_category()};
}

std::error_code connect_reason_of(int err) noexcept {
  switch (err) {
    case ECONNREFUSED:
      return make_error_code(errc::connection_refused);
    case ETIMEDOUT:
      return make_error_code(errc::connect_timeout);
    case ENETUNREACH:
    case EHOSTUNREACH:
      return make_error_code(errc::host_unreachable);
    default:
      return close_reason_of(err);
  }
}

socklen_t sockaddr_of(const endpoint& to, sockaddr_storage& ss) noexcept {
  return to_sockaddr(to, ss);
}

int open_outbound(const endpoint& to, const options& o, int& err) noexcept {
  const int fd = ::socket(to.v6 ? AF_INET6 : AF_INET,
                          SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errno;
    return -1;
  }
  tune_accepted(fd, o);
  return fd;
}

void refuse(int fd) noexcept {
  const linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::close(fd);
}

after_accept_error classify_accept_error(int err) noexcept {
  if (err == EAGAIN || err == EWOULDBLOCK) return after_accept_error::drained;
  if (err == EINTR || err == ECONNABORTED) return after_accept_error::retry;
  // accept(2) also lists network errors (EPROTO, ENETDOWN, EHOSTUNREACH,
  // ...) for one connection; Linux's TCP does not report them, and pausing
  // for one costs a tick, where a lasting one retried at once would spin.
  return after_accept_error::pause;
}

void tune_accepted(int fd, const options& o) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const int idle = static_cast<int>(o.keepalive_idle.count());
  if (idle <= 0) return;
  const int interval = static_cast<int>(o.keepalive_interval.count());
  const int probes = static_cast<int>(o.keepalive_probes);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

std::size_t send_now(int fd, std::span<const std::byte> head,
                     std::span<const std::byte> body) noexcept {
  iovec iov[2];
  std::size_t n = 0;
  for (auto part : {head, body}) {
    if (part.empty()) continue;
    iov[n].iov_base = const_cast<std::byte*>(part.data());
    iov[n].iov_len = part.size();
    ++n;
  }
  msghdr h{};
  h.msg_iov = iov;
  h.msg_iovlen = n;
  const ssize_t r = ::sendmsg(fd, &h, MSG_NOSIGNAL | MSG_DONTWAIT);
  return r > 0 ? static_cast<std::size_t>(r) : 0;
}

}  // namespace ionet::posix
