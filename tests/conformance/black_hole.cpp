// support.hpp's black_hole: a listener whose backlog is full, so a connect
// to it neither completes nor fails until the connector gives up.
#include "support.hpp"

#if defined(_WIN32) || defined(IONET_WINSIM)
// Winsock: Windows and Wine, and the simulated Winsock (tests/winsim, whose
// headers stand in for Windows' in the IONET_WINSIM build). The fillers
// connect with ConnectEx through a completion port of their own, the one
// way to connect that all three have in common.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
// clang-format off
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
// clang-format on

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

std::string failed(const char* what) {
  return std::string(what) + ": Winsock error " +
         std::to_string(WSAGetLastError());
}

// The fillers' port and OVERLAPPEDs: a cancelled ConnectEx still writes
// its OVERLAPPED and queues its packet, so they live until it has come.
struct fillers {
  HANDLE port = nullptr;
  std::vector<std::unique_ptr<OVERLAPPED>> ovs;
  int pending = 0;  // connects whose packet has not been taken
  ~fillers() {
    // The sockets are closed by now (~black_hole): each pending connect
    // completes, cancelled.
    OVERLAPPED_ENTRY e{};
    ULONG n = 0;
    while (pending > 0 &&
           GetQueuedCompletionStatusEx(port, &e, 1, &n, 2000, FALSE)) {
      pending -= static_cast<int>(n);
    }
    if (port) CloseHandle(port);
  }
};

}  // namespace

black_hole::black_hole() {
  WSADATA data;
  if (WSAStartup(MAKEWORD(2, 2), &data) != 0) {
    error_ = "WSAStartup failed";
    return;
  }
  auto f = std::make_shared<fillers>();
  platform_ = f;
  f->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0);
  if (!f->port) {
    error_ = "CreateIoCompletionPort failed";
    return;
  }
  const SOCKET l = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                              WSA_FLAG_OVERLAPPED);
  if (l == INVALID_SOCKET) {
    error_ = failed("socket");
    return;
  }
  sockets_.push_back(static_cast<std::intptr_t>(l));
  sockaddr_in a = loopback(0);
  int len = sizeof a;
  // Backlog 0: Linux (so Wine, and the simulator) queues one connection,
  // then drops further SYNs.
  if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(l, 0) != 0 ||
      getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    error_ = failed("listener");
    return;
  }
  port_ = ntohs(a.sin_port);
  LPFN_CONNECTEX connect_ex = nullptr;
  GUID guid = WSAID_CONNECTEX;
  DWORD bytes = 0;
  if (WSAIoctl(l, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid,
               &connect_ex, sizeof connect_ex, &bytes, nullptr, nullptr) != 0) {
    error_ = failed("ConnectEx");
    return;
  }
  // Fill the queue: connects that complete take its places; the first one
  // that stays pending shows it is full.
  for (int i = 0; i < 16; ++i) {
    const SOCKET c = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                                WSA_FLAG_OVERLAPPED);
    if (c == INVALID_SOCKET) {
      error_ = failed("socket");
      return;
    }
    sockets_.push_back(static_cast<std::intptr_t>(c));
    sockaddr_in any = loopback(0);
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(c, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
      error_ = failed("bind");
      return;
    }
    if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(c), f->port, 0, 0) !=
        f->port) {
      error_ = "CreateIoCompletionPort(socket) failed";
      return;
    }
    f->ovs.push_back(std::make_unique<OVERLAPPED>());
    OVERLAPPED* ov = f->ovs.back().get();
    std::memset(ov, 0, sizeof *ov);
    const sockaddr_in to = loopback(port_);
    if (!connect_ex(c, reinterpret_cast<const sockaddr*>(&to), sizeof to,
                    nullptr, 0, nullptr, ov) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
      error_ = failed("ConnectEx");
      return;
    }
    ++f->pending;  // done at once or not, its packet comes
    OVERLAPPED_ENTRY e{};
    ULONG n = 0;
    if (!GetQueuedCompletionStatusEx(f->port, &e, 1, &n, 200, FALSE))
      return;  // pending: the queue is full
    --f->pending;
    DWORD moved = 0;
    DWORD flags = 0;
    if (!WSAGetOverlappedResult(c, e.lpOverlapped, &moved, FALSE, &flags)) {
      // Windows refuses a connect to a full queue (listen()'s remarks:
      // WSAECONNREFUSED); no black hole can be made so.
      error_ = failed("a connect to the full listener ended");
      return;
    }
  }
  error_ = "the listener's queue never filled";
}

black_hole::~black_hole() {
  // The fillers first (their pending connects complete, cancelled), then
  // the listener; platform_ then waits for those packets.
  for (auto it = sockets_.rbegin(); it != sockets_.rend(); ++it)
    closesocket(static_cast<SOCKET>(*it));
}

}  // namespace ionet_test
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
