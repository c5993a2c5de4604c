// The simulator's own tests: the documented Windows rules the IOCP backend
// relies on, checked against tests/winsim with a plain Linux client. Run
// with IONET_WINSIM_TIME_WAIT_MS=300 (tests/CMakeLists.txt).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "mstcpip.h"
#include "mswsock.h"
#include "winsock2.h"
#include "ws2tcpip.h"

namespace {

using clock_type = std::chrono::steady_clock;

// A listener on 127.0.0.1 with its port and extension functions.
struct rig {
  HANDLE cport = nullptr;
  SOCKET listener = INVALID_SOCKET;
  std::uint16_t port = 0;
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_DISCONNECTEX disconnect_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;

  rig() {
    WSADATA data;
    REQUIRE(WSAStartup(MAKEWORD(2, 2), &data) == 0);
    cport = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0);
    REQUIRE(cport);
    listener = open();
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(listener, 16) == 0);
    int len = sizeof a;
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    GUID g1 = WSAID_ACCEPTEX;
    GUID g2 = WSAID_DISCONNECTEX;
    DWORD n = 0;
    REQUIRE(WSAIoctl(listener, SIO_GET_EXTENSION_FUNCTION_POINTER, &g1,
                     sizeof g1, &accept_ex, sizeof accept_ex, &n, nullptr,
                     nullptr) == 0);
    REQUIRE(WSAIoctl(listener, SIO_GET_EXTENSION_FUNCTION_POINTER, &g2,
                     sizeof g2, &disconnect_ex, sizeof disconnect_ex, &n,
                     nullptr, nullptr) == 0);
    GUID g3 = WSAID_CONNECTEX;
    REQUIRE(WSAIoctl(listener, SIO_GET_EXTENSION_FUNCTION_POINTER, &g3,
                     sizeof g3, &connect_ex, sizeof connect_ex, &n, nullptr,
                     nullptr) == 0);
  }
  ~rig() {
    closesocket(listener);
    CloseHandle(cport);
  }

  SOCKET open() {
    SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                          WSA_FLAG_OVERLAPPED);
    REQUIRE(s != INVALID_SOCKET);
    REQUIRE(CreateIoCompletionPort(reinterpret_cast<HANDLE>(s), cport, 0, 0) ==
            cport);
    return s;
  }

  // The next packet, within `ms`; nullptr on timeout.
  OVERLAPPED* next(DWORD& bytes, DWORD ms = 5000) {
    OVERLAPPED_ENTRY e{};
    ULONG n = 0;
    if (!GetQueuedCompletionStatusEx(cport, &e, 1, &n, ms, FALSE))
      return nullptr;
    bytes = e.dwNumberOfBytesTransferred;
    return e.lpOverlapped;
  }

  void post_accept(SOCKET s, char* buf, OVERLAPPED& ov) {
    std::memset(&ov, 0, sizeof ov);
    DWORD n = 0;
    const BOOL ok = accept_ex(listener, s, buf, 0, sizeof(sockaddr_in6) + 16,
                              sizeof(sockaddr_in6) + 16, &n, &ov);
    REQUIRE((ok || WSAGetLastError() == ERROR_IO_PENDING));
  }

  // An overlapped socket on the port, bound to 0.0.0.0:0 (for ConnectEx).
  SOCKET bound() {
    SOCKET s = open();
    sockaddr_in any{};
    any.sin_family = AF_INET;
    REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0);
    return s;
  }

  // ConnectEx from `s` to 127.0.0.1:`to`; its packet comes whether it
  // finished at once or not (no skip mode). False when the call failed
  // at once (WSAGetLastError says why).
  bool connect(SOCKET s, std::uint16_t to, OVERLAPPED& ov,
               std::uint32_t addr = INADDR_LOOPBACK) {
    std::memset(&ov, 0, sizeof ov);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(addr);
    a.sin_port = htons(to);
    return connect_ex(s, reinterpret_cast<const sockaddr*>(&a), sizeof a,
                      nullptr, 0, nullptr, &ov) ||
           WSAGetLastError() == ERROR_IO_PENDING;
  }

  int client() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return fd;
  }

  // A connection accepted through AcceptEx: the server socket, the client fd.
  std::pair<SOCKET, int> connection() {
    SOCKET s = open();
    char buf[2 * (sizeof(sockaddr_in6) + 16)];
    OVERLAPPED ov;
    post_accept(s, buf, ov);
    const int fd = client();
    DWORD bytes = 0;
    REQUIRE(next(bytes) == &ov);
    REQUIRE(ov.Internal == 0);
    return {s, fd};
  }
};

DWORD error_of(SOCKET s, OVERLAPPED& ov) {
  DWORD bytes = 0;
  DWORD flags = 0;
  return WSAGetOverlappedResult(s, &ov, &bytes, FALSE, &flags)
             ? 0
             : WSAGetLastError();
}

}  // namespace

TEST_CASE("winsim: a zero-byte read completes when data waits and takes none") {
  rig r;
  auto [s, fd] = r.connection();
  OVERLAPPED ov{};
  WSABUF none{0, nullptr};
  DWORD n = 0;
  DWORD flags = 0;
  REQUIRE(WSARecv(s, &none, 1, &n, &flags, &ov, nullptr) == SOCKET_ERROR);
  REQUIRE(WSAGetLastError() == WSA_IO_PENDING);
  CHECK(ov.Internal == 0x103);  // STATUS_PENDING
  REQUIRE(::send(fd, "hi", 2, 0) == 2);
  DWORD bytes = 99;
  REQUIRE(r.next(bytes) == &ov);
  CHECK(bytes == 0);
  char data[16];
  WSABUF b{sizeof data, data};
  OVERLAPPED ov2{};
  REQUIRE(WSARecv(s, &b, 1, &n, &flags, &ov2, nullptr) == 0);  // at once
  CHECK(n == 2);
  REQUIRE(r.next(bytes) == &ov2);  // and still a packet: no skip mode
  CHECK(std::memcmp(data, "hi", 2) == 0);
  ::close(fd);
  closesocket(s);
}

TEST_CASE("winsim: AcceptEx is cancelled through the listener only") {
  rig r;
  SOCKET s = r.open();
  char buf[2 * (sizeof(sockaddr_in6) + 16)];
  OVERLAPPED ov;
  r.post_accept(s, buf, ov);
  CHECK_FALSE(CancelIoEx(reinterpret_cast<HANDLE>(s), nullptr));
  CHECK(GetLastError() == ERROR_NOT_FOUND);
  REQUIRE(CancelIoEx(reinterpret_cast<HANDLE>(r.listener), &ov));
  DWORD bytes = 0;
  REQUIRE(r.next(bytes) == &ov);
  CHECK(error_of(r.listener, ov) == WSA_OPERATION_ABORTED);
  // SO_UPDATE_ACCEPT_CONTEXT needs a completed AcceptEx.
  CHECK(setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                   reinterpret_cast<const char*>(&r.listener),
                   sizeof r.listener) != 0);
  CHECK(WSAGetLastError() == WSAENOTCONN);
  closesocket(s);
}

TEST_CASE("winsim: WSASend completes whole, when the peer has read it all") {
  rig r;
  auto [s, fd] = r.connection();
  std::vector<char> big(8 << 20, 'x');
  WSABUF b{static_cast<ULONG>(big.size()), big.data()};
  OVERLAPPED ov{};
  DWORD n = 0;
  REQUIRE(WSASend(s, &b, 1, &n, 0, &ov, nullptr) == SOCKET_ERROR);
  REQUIRE(WSAGetLastError() == WSA_IO_PENDING);  // more than the socket buffers
  std::size_t got = 0;
  std::vector<char> sink(1 << 16);
  while (got < big.size()) {
    const ssize_t k = ::recv(fd, sink.data(), sink.size(), 0);
    REQUIRE(k > 0);
    got += static_cast<std::size_t>(k);
  }
  DWORD bytes = 0;
  REQUIRE(r.next(bytes) == &ov);
  CHECK(bytes == big.size());
  ::close(fd);
  closesocket(s);
}

TEST_CASE(
    "winsim: DisconnectEx waits out TIME_WAIT after an active close only") {
  rig r;
  const auto reuse = [&](bool active) {
    auto [s, fd] = r.connection();
    char c;
    if (active) {
      REQUIRE(shutdown(s, SD_SEND) == 0);  // our FIN first
      REQUIRE(::recv(fd, &c, 1, 0) == 0);
      ::close(fd);
    } else {
      ::shutdown(fd, SHUT_WR);  // the peer's FIN first
      char buf[4];
      WSABUF b{sizeof buf, buf};
      OVERLAPPED rd{};
      DWORD n = 0;
      DWORD flags = 0;
      DWORD bytes = 0;
      if (WSARecv(s, &b, 1, &n, &flags, &rd, nullptr) == 0 ||
          WSAGetLastError() == WSA_IO_PENDING) {
        REQUIRE(r.next(bytes) == &rd);
      }
      ::close(fd);
    }
    OVERLAPPED ov{};
    const auto t0 = clock_type::now();
    REQUIRE_FALSE(r.disconnect_ex(s, &ov, TF_REUSE_SOCKET, 0));
    REQUIRE(WSAGetLastError() == ERROR_IO_PENDING);
    DWORD bytes = 0;
    REQUIRE(r.next(bytes) == &ov);
    CHECK(ov.Internal == 0);
    const auto took = clock_type::now() - t0;
    // Reusable: it accepts again.
    char buf[2 * (sizeof(sockaddr_in6) + 16)];
    OVERLAPPED acc;
    r.post_accept(s, buf, acc);
    const int fd2 = r.client();
    REQUIRE(r.next(bytes) == &acc);
    CHECK(acc.Internal == 0);
    ::close(fd2);
    closesocket(s);
    return took;
  };
  using std::chrono::milliseconds;
  CHECK(reuse(true) >= milliseconds(300));  // IONET_WINSIM_TIME_WAIT_MS
  CHECK(reuse(false) < milliseconds(300));
}

TEST_CASE("winsim: ConnectEx needs a bound socket and completes by the port") {
  rig r;
  OVERLAPPED ov;
  // ConnectEx's WSAEINVAL: "an unbound or a listening socket".
  SOCKET unbound = r.open();
  CHECK_FALSE(r.connect(unbound, r.port, ov));
  CHECK(WSAGetLastError() == WSAEINVAL);
  CHECK_FALSE(r.connect(r.listener, r.port, ov));
  CHECK(WSAGetLastError() == WSAEINVAL);
  closesocket(unbound);

  SOCKET s = r.bound();
  REQUIRE(r.connect(s, r.port, ov));
  DWORD bytes = 0;
  REQUIRE(r.next(bytes) == &ov);
  CHECK(error_of(s, ov) == 0);
  // Connected, but getpeername and shutdown wait for the connect context.
  sockaddr_in peer{};
  int len = sizeof peer;
  CHECK(getpeername(s, reinterpret_cast<sockaddr*>(&peer), &len) != 0);
  CHECK(WSAGetLastError() == WSAENOTCONN);
  CHECK(shutdown(s, SD_SEND) != 0);
  REQUIRE(setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) ==
          0);
  REQUIRE(getpeername(s, reinterpret_cast<sockaddr*>(&peer), &len) == 0);
  CHECK(ntohs(peer.sin_port) == r.port);
  // A second ConnectEx on it: connected already.
  OVERLAPPED again;
  CHECK_FALSE(r.connect(s, r.port, again));
  CHECK(WSAGetLastError() == WSAEISCONN);
  closesocket(s);
}

TEST_CASE(
    "winsim: ConnectEx is refused, unreachable, or waits on a full "
    "backlog until cancelled") {
  rig r;
  OVERLAPPED ov;
  DWORD bytes = 0;
  // Nothing listens: the completion says refused.
  std::uint16_t free_port = 0;
  {
    SOCKET probe = r.bound();
    sockaddr_in a{};
    int len = sizeof a;
    REQUIRE(getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    free_port = ntohs(a.sin_port);  // bound, never listening
    SOCKET s = r.bound();
    REQUIRE(r.connect(s, free_port, ov));
    REQUIRE(r.next(bytes) == &ov);
    CHECK(error_of(s, ov) == WSAECONNREFUSED);
    closesocket(s);
    closesocket(probe);
  }
  // No route for TCP to the limited broadcast address: it fails at once.
  {
    SOCKET s = r.bound();
    CHECK_FALSE(r.connect(s, 9, ov, INADDR_BROADCAST));
    const int e = WSAGetLastError();
    CHECK((e == WSAENETUNREACH || e == WSAEHOSTUNREACH));
    closesocket(s);
  }
  // A listener with backlog 0 that accepts nothing: connects complete
  // until its queue is full, then one stays pending (the SYN dropped, as
  // on Linux, Wine's host) until CancelIoEx.
  SOCKET l = r.bound();
  REQUIRE(listen(l, 0) == 0);
  sockaddr_in la{};
  int llen = sizeof la;
  REQUIRE(getsockname(l, reinterpret_cast<sockaddr*>(&la), &llen) == 0);
  std::vector<SOCKET> fillers;
  std::vector<OVERLAPPED> ovs(8);
  bool pending = false;
  for (std::size_t i = 0; i < ovs.size() && !pending; ++i) {
    fillers.push_back(r.bound());
    REQUIRE(r.connect(fillers.back(), ntohs(la.sin_port), ovs[i]));
    if (r.next(bytes, 300) == nullptr) {
      pending = true;
      CHECK(ovs[i].Internal == 0x103);  // STATUS_PENDING
      REQUIRE(CancelIoEx(reinterpret_cast<HANDLE>(fillers.back()), &ovs[i]));
      REQUIRE(r.next(bytes) == &ovs[i]);
      CHECK(error_of(fillers.back(), ovs[i]) == WSA_OPERATION_ABORTED);
    } else {
      CHECK(error_of(fillers.back(), ovs[i]) == 0);
    }
  }
  CHECK(pending);
  CHECK(fillers.size() >= 2);  // at least one was queued first
  for (SOCKET f : fillers) closesocket(f);
  closesocket(l);
}
