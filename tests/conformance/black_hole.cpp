// support.hpp's black_hole: a listener whose backlog is full, so a connect
// to it neither completes nor fails until the connector gives up.
#include "support.hpp"

#if defined(_WIN32) || defined(IONET_WINSIM)
#error "black_hole: the Windows and simulated-Winsock versions are not written"
#else
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ionet_test {
namespace {

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

black_hole::black_hole() {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return;
  }
  sockets_.push_back(l);
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  // Backlog 0: Linux queues one connection, then drops further SYNs.
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(l, 0) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    error_ = std::string("listener: ") + std::strerror(errno);
    return;
  }
  port_ = ntohs(a.sin_port);
  // Fill the queue: connects that complete take its places; the first one
  // that stays pending shows it is full.
  for (int i = 0; i < 16; ++i) {
    const int c =
        ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c < 0) {
      error_ = std::string("socket: ") + std::strerror(errno);
      return;
    }
    sockets_.push_back(c);
    const sockaddr_in to = loopback(port_);
    if (::connect(c, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0)
      continue;
    if (errno != EINPROGRESS) {
      error_ = std::string("connect: ") + std::strerror(errno);
      return;
    }
    pollfd p{c, POLLOUT, 0};
    if (::poll(&p, 1, 200) == 0) return;  // pending: the queue is full
  }
  error_ = "the listener's queue never filled";
}

black_hole::~black_hole() {
  for (const std::intptr_t s : sockets_) ::close(static_cast<int>(s));
}

}  // namespace ionet_test
#endif
