// winsim: making and configuring sockets. WSASocketW, bind, listen,
// socket options, shutdown, WSAIoctl (extension functions, keepalive),
// WSAEventSelect and its network event record, completion notification
// modes and the provider's protocol information. Overlapped I/O is in
// io.cpp.
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "sim.hpp"

namespace winsim {
namespace {

std::atomic<std::uint64_t> serials{0};

int fail_errno() {
  return fail(static_cast<DWORD>(wsa_from_errno(errno)), SOCKET_ERROR);
}

bool same_guid(const void* a, const GUID& b) {
  return std::memcmp(a, &b, sizeof b) == 0;
}

// The one provider here: the base TCP provider, IFS unless the non_ifs
// fault makes it a layered (LSP) chain without XP1_IFS_HANDLES.
void describe(WSAPROTOCOL_INFOW& p, int family) {
  std::memset(&p, 0, sizeof p);
  const bool ifs = !enabled(fault::non_ifs);
  p.dwServiceFlags1 = ifs ? XP1_IFS_HANDLES : 0;
  p.ProtocolChain.ChainLen = ifs ? BASE_PROTOCOL : 2;
  p.iVersion = 2;
  p.iAddressFamily = family;
  p.iMaxSockAddr = sizeof(sockaddr_in6);
  p.iMinSockAddr = sizeof(sockaddr_in);
  p.iSocketType = SOCK_STREAM;
  p.iProtocol = IPPROTO_TCP;
  const wchar_t* name = ifs ? L"winsim TCP" : L"winsim TCP over a non-IFS LSP";
  for (int i = 0; name[i] && i < WSAPROTOCOL_LEN; ++i)
    p.szProtocol[i] = name[i];
}

template <class T>
const T* option(const char* optval, int optlen) {
  return optval && optlen >= static_cast<int>(sizeof(T))
             ? reinterpret_cast<const T*>(optval)
             : nullptr;
}

// The event object `e` names, when one is `wanted`; false if it names none.
bool event_of(WSAEVENT e, bool wanted, std::shared_ptr<event>& out) {
  if (!wanted) return true;
  out = find_as<event>(reinterpret_cast<std::uintptr_t>(e));
  return out != nullptr;
}

// getsockname/getpeername: Linux's, with Winsock's int lengths.
int address_of(SOCKET h, sockaddr* name, int* namelen,
               int (*get)(int, sockaddr*, socklen_t*) noexcept) {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (!namelen) return fail(WSAEFAULT, SOCKET_ERROR);
  socklen_t len = static_cast<socklen_t>(*namelen);
  std::lock_guard g(s->m);
  if (get(s->fd, name, &len) != 0) return fail_errno();
  *namelen = static_cast<int>(len);
  return 0;
}

}  // namespace
}  // namespace winsim

using namespace winsim;

SOCKET WSASocketW(int af, int type, int protocol, LPWSAPROTOCOL_INFOW, GROUP,
                  DWORD) noexcept {
  if (!started()) return fail(WSANOTINITIALISED, INVALID_SOCKET);
  // Only TCP is modelled; every socket is overlapped.
  if (type != SOCK_STREAM) return fail(WSAEOPNOTSUPP, INVALID_SOCKET);
  const int fd =
      ::socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0)
    return fail(static_cast<DWORD>(wsa_from_errno(errno)), INVALID_SOCKET);
  auto s = std::make_shared<sim_socket>();
  s->fd = fd;
  s->family = af;
  s->serial = ++serials;
  register_socket(s);
  s->handle = add_handle(s);
  return s->handle;
}

int bind(SOCKET h, const sockaddr* name, int namelen) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::lock_guard g(s->m);
  if (::bind(s->fd, name, static_cast<socklen_t>(namelen)) != 0)
    return fail_errno();
  s->bound = true;
  return 0;
}

int listen(SOCKET h, int backlog) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::lock_guard g(s->m);
  if (::listen(s->fd, backlog) != 0) return fail_errno();
  s->state = sock_state::listening;
  kernel_watch(*s);
  return 0;
}

int getsockname(SOCKET h, sockaddr* name, int* namelen) noexcept {
  return address_of(h, name, namelen, &::getsockname);
}

int getpeername(SOCKET h, sockaddr* name, int* namelen) noexcept {
  if (auto s = find_as<sim_socket>(h)) {
    std::lock_guard g(s->m);
    // SOL_SOCKET options, SO_UPDATE_CONNECT_CONTEXT: set it "if the
    // getpeername, getsockname, getsockopt, setsockopt, or shutdown
    // functions are to be used on the connected socket". Modelled for
    // getpeername and shutdown: they fail until it is set.
    if (s->connected_out && !s->connect_context)
      return fail(WSAENOTCONN, SOCKET_ERROR);
  }
  return address_of(h, name, namelen, &::getpeername);
}

int setsockopt(SOCKET h, int level, int optname, const char* optval,
               int optlen) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::lock_guard g(s->m);
  if (level == SOL_SOCKET && optname == SO_EXCLUSIVEADDRUSE) {
    // SO_EXCLUSIVEADDRUSE: no other socket may bind the address. A Linux
    // socket without SO_REUSEADDR already has that.
    if (!option<BOOL>(optval, optlen)) return fail(WSAEFAULT, SOCKET_ERROR);
    return 0;
  }
  if (level == SOL_SOCKET && optname == SO_UPDATE_CONNECT_CONTEXT) {
    // ConnectEx remarks: after ConnectEx succeeds, the socket takes its
    // options and full connected state only once this option is set (no
    // value). On a socket ConnectEx did not connect it does not apply.
    if (!s->connected_out || s->state != sock_state::connected)
      return fail(WSAENOTCONN, SOCKET_ERROR);
    s->connect_context = true;
    return 0;
  }
  if (level == SOL_SOCKET && optname == SO_UPDATE_ACCEPT_CONTEXT) {
    // AcceptEx remarks: SO_UPDATE_ACCEPT_CONTEXT, with the listening
    // socket as its value, applies to a socket AcceptEx connected.
    const SOCKET* l = option<SOCKET>(optval, optlen);
    if (!l) return fail(WSAEFAULT, SOCKET_ERROR);
    if (!find_as<sim_socket>(*l)) return fail(WSAENOTSOCK, SOCKET_ERROR);
    if (!s->accepted || s->state != sock_state::connected) {
      return fail(WSAENOTCONN, SOCKET_ERROR);
    }
    // A valid call the provider still refuses. setsockopt documents no
    // shortage (WSAENOBUFS is not among its errors); it answers WSAEINVAL,
    // "the information in optval is not valid", as for a listener whose
    // context this socket cannot take. Which documented error it is does
    // not matter to a caller: the socket stays connected, without the
    // listener's context, and the caller must not use it as a connection.
    if (roll(fault::update_context_fail, s->serial,
             s->next_decision(fault::update_context_fail))) {
      return fail(WSAEINVAL, SOCKET_ERROR);
    }
    return 0;
  }
  // The rest are Linux's own options with the same meaning (SO_LINGER,
  // TCP_NODELAY, IPV6_V6ONLY, SO_KEEPALIVE, buffer sizes): see winsock2.h.
  if (::setsockopt(s->fd, level, optname, static_cast<const void*>(optval),
                   static_cast<socklen_t>(optlen)) != 0) {
    return fail_errno();
  }
  return 0;
}

int getsockopt(SOCKET h, int level, int optname, char* optval,
               int* optlen) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (!optlen) return fail(WSAEFAULT, SOCKET_ERROR);
  std::lock_guard g(s->m);
  if (level == SOL_SOCKET && optname == SO_PROTOCOL_INFOW) {
    if (!optval || *optlen < static_cast<int>(sizeof(WSAPROTOCOL_INFOW))) {
      return fail(WSAEFAULT, SOCKET_ERROR);
    }
    describe(*reinterpret_cast<WSAPROTOCOL_INFOW*>(optval), s->family);
    *optlen = sizeof(WSAPROTOCOL_INFOW);
    return 0;
  }
  socklen_t len = static_cast<socklen_t>(*optlen);
  if (::getsockopt(s->fd, level, optname, optval, &len) != 0)
    return fail_errno();
  *optlen = static_cast<int>(len);
  return 0;
}

int shutdown(SOCKET h, int how) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::lock_guard g(s->m);
  if (s->state != sock_state::connected ||
      (s->connected_out && !s->connect_context)) {
    return fail(WSAENOTCONN, SOCKET_ERROR);  // see getpeername
  }
  if ((how == SD_SEND || how == SD_BOTH) && !s->fin_sent) {
    // Whether our FIN goes out before the peer's arrived decides whether
    // a later DisconnectEx waits out TIME_WAIT (io.cpp).
    const int st = tcp_state(s->fd);
    s->active_close = st != TCP_CLOSE_WAIT && st != TCP_CLOSE;
    s->fin_sent = true;
  }
  // SD_RECEIVE/SD_SEND/SD_BOTH have SHUT_RD/SHUT_WR/SHUT_RDWR's values.
  if (::shutdown(s->fd, how) != 0) return fail_errno();
  return 0;
}

int WSAIoctl(SOCKET h, DWORD code, LPVOID in, DWORD in_bytes, LPVOID out,
             DWORD out_bytes, LPDWORD returned, LPWSAOVERLAPPED,
             LPWSAOVERLAPPED_COMPLETION_ROUTINE) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (returned) *returned = 0;
  if (code == SIO_GET_EXTENSION_FUNCTION_POINTER) {
    if (!in || in_bytes < sizeof(GUID) || !out || out_bytes < sizeof(void*)) {
      return fail(WSAEFAULT, SOCKET_ERROR);
    }
    const GUID accept = WSAID_ACCEPTEX;
    const GUID addrs = WSAID_GETACCEPTEXSOCKADDRS;
    const GUID disconnect = WSAID_DISCONNECTEX;
    const GUID connect = WSAID_CONNECTEX;
    if (same_guid(in, accept)) {
      *static_cast<LPFN_ACCEPTEX*>(out) = &accept_ex;
    } else if (same_guid(in, addrs)) {
      *static_cast<LPFN_GETACCEPTEXSOCKADDRS*>(out) = &get_accept_ex_sockaddrs;
    } else if (same_guid(in, disconnect)) {
      *static_cast<LPFN_DISCONNECTEX*>(out) = &disconnect_ex;
    } else if (same_guid(in, connect)) {
      *static_cast<LPFN_CONNECTEX*>(out) = &connect_ex;
    } else {
      return fail(WSAEINVAL, SOCKET_ERROR);
    }
    if (returned) *returned = sizeof(void*);
    return 0;
  }
  if (code == SIO_KEEPALIVE_VALS) {
    // SIO_KEEPALIVE_VALS: times in milliseconds; Linux counts seconds.
    if (!in || in_bytes < sizeof(tcp_keepalive))
      return fail(WSAEFAULT, SOCKET_ERROR);
    const auto* k = static_cast<const tcp_keepalive*>(in);
    std::lock_guard g(s->m);
    const int on = k->onoff ? 1 : 0;
    const int idle = std::max(1, static_cast<int>(k->keepalivetime / 1000));
    const int interval =
        std::max(1, static_cast<int>(k->keepaliveinterval / 1000));
    if (::setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0 ||
        (on && (::setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle,
                             sizeof idle) != 0 ||
                ::setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval,
                             sizeof interval) != 0))) {
      return fail_errno();
    }
    return 0;
  }
  return fail(WSAEINVAL, SOCKET_ERROR);
}

// WSAEventSelect: which network events are recorded and which event object
// is signaled for them; a new call replaces the previous one.
int WSAEventSelect(SOCKET h, WSAEVENT e, long network_events) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::shared_ptr<event> ev;
  if (!event_of(e, network_events != 0, ev))
    return fail(WSA_INVALID_HANDLE, SOCKET_ERROR);
  std::lock_guard g(s->m);
  s->select_event = std::move(ev);
  s->select_mask = network_events;
  s->recorded = 0;
  if (s->state == sock_state::listening) check_fd_accept(*s);
  return 0;
}

// WSAEnumNetworkEvents: the record since the last call; the record is
// cleared and the event object, if given, reset.
int WSAEnumNetworkEvents(SOCKET h, WSAEVENT e, LPWSANETWORKEVENTS ne) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (!ne) return fail(WSAEFAULT, SOCKET_ERROR);
  std::shared_ptr<event> ev;
  if (!event_of(e, e != nullptr, ev))
    return fail(WSA_INVALID_HANDLE, SOCKET_ERROR);
  std::lock_guard g(s->m);
  std::memset(ne, 0, sizeof *ne);
  ne->lNetworkEvents = s->recorded;
  s->recorded = 0;
  if (ev) reset(*ev);
  return 0;
}

// SetFileCompletionNotificationModes: with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
// an operation that succeeds at once queues no packet. Microsoft documents
// the mode as "only compatible" with IFS providers; under the non_ifs
// fault the call succeeds and is not honoured (the layered provider still
// queues a packet for an operation that succeeded at once), the hostile
// reading: a caller that did not check XP1_IFS_HANDLES first handles
// such an operation twice.
BOOL SetFileCompletionNotificationModes(HANDLE h, BYTE flags) noexcept {
  auto s = find_as<sim_socket>(reinterpret_cast<std::uintptr_t>(h));
  if (!s) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  if (enabled(fault::non_ifs)) return TRUE;
  std::lock_guard g(s->m);
  s->skip_on_success = (flags & FILE_SKIP_COMPLETION_PORT_ON_SUCCESS) != 0;
  return TRUE;
}

// WSAEnumProtocols: the TCP provider for IPv4 and for IPv6. `protocols`
// (a filter) is ignored: there is nothing else.
int WSAEnumProtocolsW(int*, LPWSAPROTOCOL_INFOW buffer,
                      LPDWORD length) noexcept {
  if (!length) return fail(WSAEFAULT, SOCKET_ERROR);
  constexpr DWORD need = 2 * sizeof(WSAPROTOCOL_INFOW);
  if (!buffer || *length < need) {
    *length = need;
    return fail(WSAENOBUFS, SOCKET_ERROR);
  }
  describe(buffer[0], AF_INET);
  describe(buffer[1], AF_INET6);
  return 2;
}
