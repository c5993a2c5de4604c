// winsim: overlapped I/O on sockets. WSARecv, WSASend, AcceptEx and
// DisconnectEx either finish at once or pend; a pending operation is
// finished by the kernel thread (progress(), when epoll says the socket is
// ready) and its packet is queued on the socket's completion port.
// CancelIoEx and closesocket abort pending operations.
//
// The rules modelled, from Microsoft's documentation:
// - WSARecv/WSASend remarks: an overlapped call that finishes at once
//   returns 0 and a completion packet is still queued, unless the socket
//   is in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode
//   (SetFileCompletionNotificationModes remarks: no packet when the call
//   returns success at once). A call that fails at once (any error but
//   WSA_IO_PENDING) queues nothing. A pending one always queues a packet,
//   whether it succeeds or fails.
// - OVERLAPPED remarks: Internal is STATUS_PENDING while the request is
//   in progress and the status code when it is done; InternalHigh is the
//   byte count.
// - WSASend remarks: on a stream socket the operation completes when all
//   the bytes are sent or on error ("whole or fail"); the rest of a
//   partial write goes out as the socket drains.
// - A zero-byte WSARecv completes when data (or EOF, or an error) is
//   waiting, and consumes nothing.
// - CancelIoEx remarks: the operations issued for the handle complete with
//   ERROR_OPERATION_ABORTED. AcceptEx is issued on the listening socket,
//   so only a cancel on the listener reaches it.
// - DisconnectEx, TF_REUSE_SOCKET: "When the DisconnectEx request
//   completes, the socket handle can be passed to the AcceptEx or ConnectEx
//   function", and "a TCP socket may be subject to the TCP TIME_WAIT state,
//   causing the DisconnectEx call to be delayed". TIME_WAIT is the side
//   that sent the first FIN (an active close): there DisconnectEx completes
//   after TIME_WAIT (2 MSL, Windows' default 120 s;
//   IONET_WINSIM_TIME_WAIT_MS here); after a passive close, at once.
// - ConnectEx remarks and return values: the socket must be bound
//   (WSAEINVAL for an unbound or a listening one); the connect completes
//   like any overlapped operation (a packet, unless skip-on-success and
//   done at once); a refused connect completes with WSAECONNREFUSED; once
//   it succeeded the socket has its full connected state (getpeername,
//   shutdown) only after SO_UPDATE_CONNECT_CONTEXT. A connect to a
//   listener whose backlog is full waits as on Linux (the SYN is dropped
//   and sent again) until it is cancelled or the system gives up.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "sim.hpp"

namespace winsim {
namespace {

enum class outcome { done, pending };

bool is_reset(DWORD e) {
  return e == WSAECONNRESET || e == WSAECONNABORTED || e == WSAENETRESET ||
         e == WSAETIMEDOUT || e == ERROR_NETNAME_DELETED;
}

// A reset is final: Windows fails every later operation on the connection
// with it. Linux reports ECONNRESET once and then reads EOF, so it is
// remembered here.
DWORD latch(sim_socket& s, DWORD e) {
  if (is_reset(e)) s.latched = e;
  return e;
}

DWORD send_error(sim_socket& s, int e) {
  // EPIPE: after our own shutdown(SD_SEND) Windows says WSAESHUTDOWN; on a
  // connection the peer reset, WSAECONNRESET.
  if (e == EPIPE) return s.fin_sent ? WSAESHUTDOWN : latch(s, WSAECONNRESET);
  return latch(s, static_cast<DWORD>(wsa_from_errno(e)));
}

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

outcome try_recv(sim_socket& s, op& o, DWORD& err) {
  err = 0;
  if (s.latched) {
    err = s.latched;
    return outcome::done;
  }
  for (;;) {
    ssize_t n;
    if (o.k == op::kind::recv_ready) {
      char b;
      n = ::recv(s.fd, &b, 1, MSG_PEEK);
      if (n >= 0) return outcome::done;  // data or EOF waiting; nothing taken
    } else {
      // Destructive faults: the read finds the connection reset.
      const std::uint64_t d = s.next_decision(fault::reset_read);
      if (roll(fault::reset_read, s.serial, d)) {
        err = latch(s, WSAECONNRESET);
        return outcome::done;
      }
      if (roll(fault::netname_read, s.serial, d)) {
        err = latch(s, ERROR_NETNAME_DELETED);
        return outcome::done;
      }
      msghdr mh{};
      mh.msg_iov = o.iov.data();
      mh.msg_iovlen = std::min<std::size_t>(o.iov.size(), IOV_MAX);
      n = ::recvmsg(s.fd, &mh, 0);
      if (n >= 0) {
        o.done = static_cast<std::size_t>(n);  // 0: the peer's FIN
        return outcome::done;
      }
    }
    if (errno == EINTR) continue;
    if (would_block(errno)) return outcome::pending;
    err = latch(s, static_cast<DWORD>(wsa_from_errno(errno)));
    return outcome::done;
  }
}

outcome try_send(sim_socket& s, op& o, DWORD& err) {
  err = 0;
  if (s.latched) {
    err = s.latched;
    return outcome::done;
  }
  if (o.total == 0) {
    if (::send(s.fd, nullptr, 0, MSG_NOSIGNAL) < 0) err = send_error(s, errno);
    return outcome::done;
  }
  while (o.done < o.total) {
    msghdr mh{};
    mh.msg_iov = o.iov.data();
    mh.msg_iovlen = std::min<std::size_t>(o.iov.size(), IOV_MAX);
    const ssize_t n = ::sendmsg(s.fd, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (would_block(errno)) return outcome::pending;
      err = send_error(s, errno);
      return outcome::done;
    }
    // Drop what went out from the front of the buffers.
    auto left = static_cast<std::size_t>(n);
    o.done += left;
    std::size_t i = 0;
    while (i < o.iov.size() && left >= o.iov[i].iov_len)
      left -= o.iov[i++].iov_len;
    o.iov.erase(o.iov.begin(), o.iov.begin() + static_cast<std::ptrdiff_t>(i));
    if (left) {
      o.iov.front().iov_base =
          static_cast<char*>(o.iov.front().iov_base) + left;
      o.iov.front().iov_len -= left;
    }
  }
  return outcome::done;
}

// AcceptEx's output buffer: the first data (none here), the local address
// area, then the remote one (AcceptEx remarks). Inside an area the address
// is put at the first 8-byte boundary (an area has 16 bytes to spare), so
// the sockaddr the backend reads through GetAcceptExSockaddrs is aligned.
sockaddr* address_in(char* area) {
  const auto p = reinterpret_cast<std::uintptr_t>(area);
  return reinterpret_cast<sockaddr*>((p + 7) & ~std::uintptr_t{7});
}

int length_of(const sockaddr* sa) {
  return sa->sa_family == AF_INET6 ? static_cast<int>(sizeof(sockaddr_in6))
                                   : static_cast<int>(sizeof(sockaddr_in));
}

outcome try_accept(sim_socket& l, op& o, DWORD& err) {
  err = 0;
  sockaddr_storage peer{};
  socklen_t plen = sizeof peer;
  int nfd;
  for (;;) {
    nfd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&peer), &plen,
                    SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (nfd >= 0) break;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (would_block(errno)) return outcome::pending;
    err = static_cast<DWORD>(wsa_from_errno(errno));
    return outcome::done;
  }
  sim_socket& a = *o.accept_into;
  std::lock_guard g(a.m);
  if (a.closed || a.state != sock_state::fresh) {
    ::close(nfd);  // the client sees its connection reset
    err = a.closed ? WSAENOTSOCK : WSAEINVAL;
    return outcome::done;
  }
  // The accept socket becomes the connection: its Linux descriptor number
  // stays, now naming the accepted connection.
  ::dup3(nfd, a.fd, O_CLOEXEC);
  ::close(nfd);
  a.state = sock_state::connected;
  a.accepted = true;
  a.fin_sent = false;
  a.active_close = false;
  a.latched = 0;
  kernel_watch(a);
  char* local_area = o.out;
  char* remote_area = o.out + o.local_bytes;
  sockaddr_storage local{};
  socklen_t llen = sizeof local;
  ::getsockname(a.fd, reinterpret_cast<sockaddr*>(&local), &llen);
  std::memcpy(address_in(local_area), &local, static_cast<std::size_t>(llen));
  std::memcpy(address_in(remote_area), &peer, static_cast<std::size_t>(plen));
  return outcome::done;
}

// A pending ConnectEx: done when Linux's connect has finished, one way or
// the other (EPOLLOUT, or an error), or at once under a fault.
outcome try_connect(sim_socket& s, op& o, DWORD& err) {
  err = 0;
  if (o.silent) return outcome::pending;  // a SYN nobody answers
  if (o.forced) {
    err = o.forced;
    return outcome::done;
  }
  int e = 0;
  socklen_t len = sizeof e;
  if (::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
  if (e) {
    err = static_cast<DWORD>(wsa_from_errno(e));
    return outcome::done;
  }
  pollfd p{s.fd, POLLOUT, 0};
  if (::poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT)) return outcome::pending;
  return outcome::done;
}

outcome try_op(sim_socket& s, op& o, DWORD& err) {
  switch (o.k) {
    case op::kind::recv:
    case op::kind::recv_ready:
      return try_recv(s, o, err);
    case op::kind::send:
      return try_send(s, o, err);
    case op::kind::accept:
      return try_accept(s, o, err);
    case op::kind::connect:
      return try_connect(s, o, err);
    case op::kind::disconnect:
      break;
  }
  return outcome::pending;
}

void connected_by_connect_ex(sim_socket& s) {
  s.state = sock_state::connected;
  s.connected_out = true;
  s.connect_context = false;  // until SO_UPDATE_CONNECT_CONTEXT
  s.fin_sent = false;
  s.active_close = false;
  s.latched = 0;
}

// Ends s's pending ConnectEx with `err` (0: connected) and queues its packet.
void finish_connect(sim_socket& s, DWORD err) {
  op o = std::move(*s.connect);
  s.connect.reset();
  if (err) {
    // A failed connect leaves nothing to use: only closesocket (Windows
    // does not promise a second ConnectEx on it).
    s.state = sock_state::unusable;
    kernel_unwatch(s);
  } else {
    connected_by_connect_ex(s);
  }
  complete(s, o, err);
}

std::deque<op>& queue_of(sim_socket& s, op::kind k) {
  if (k == op::kind::send) return s.sends;
  if (k == op::kind::accept) return s.accepts;
  return s.recvs;
}

void drain(sim_socket& s, std::deque<op>& q) {
  while (!q.empty()) {
    DWORD err = 0;
    if (try_op(s, q.front(), err) == outcome::pending) return;
    op o = std::move(q.front());
    q.pop_front();
    complete(s, o, err);
  }
}

// Issues `o` on `s`: finishes it at once when it can (with a packet only
// if the socket is not in skip-on-success mode), else leaves it pending.
// The Win32 return convention is the caller's; this returns the error
// (0: done at once, WSA_IO_PENDING: pending, else failed at once). The
// byte count of an operation done at once is stored before its packet is
// queued: after that the OVERLAPPED is the worker's.
DWORD issue(const std::shared_ptr<sim_socket>& sp, op o, LPDWORD bytes) {
  sim_socket& s = *sp;
  std::deque<op>& q = queue_of(s, o.k);
  o.ov->Internal = status_pending;
  o.ov->InternalHigh = 0;
  // inline_pend: an operation that could finish at once is left pending
  // for the kernel thread instead (Windows may do either).
  const bool pend =
      roll(fault::inline_pend, s.serial, s.next_decision(fault::inline_pend));
  if (q.empty() && !pend) {
    DWORD err = 0;
    if (try_op(s, o, err) == outcome::done) {
      if (err) return err;  // nothing is queued for it
      o.ov->InternalHigh = o.done;
      o.ov->Internal = 0;
      if (bytes) *bytes = static_cast<DWORD>(o.done);
      if (s.cport && !s.skip_on_success) {
        s.cport->post(s.key, o.ov, static_cast<DWORD>(o.done));
      }
      return 0;
    }
  }
  q.push_back(std::move(o));
  if (pend) kernel_kick(sp);
  return WSA_IO_PENDING;
}

std::vector<iovec> iov_of(LPWSABUF bufs, DWORD count, std::size_t& total) {
  std::vector<iovec> iov;
  iov.reserve(count);
  total = 0;
  for (DWORD i = 0; i < count; ++i) {
    if (bufs[i].len == 0) continue;
    iov.push_back(iovec{bufs[i].buf, bufs[i].len});
    total += bufs[i].len;
  }
  return iov;
}

// A WSARecv/WSASend without an OVERLAPPED on an overlapped socket: it
// blocks until done, as on Windows.
int blocking(sim_socket& s, op& o, LPDWORD bytes) {
  for (;;) {
    DWORD err = 0;
    outcome r;
    {
      std::lock_guard g(s.m);
      r = try_op(s, o, err);
    }
    if (r == outcome::done) {
      if (err) return fail(err, SOCKET_ERROR);
      if (bytes) *bytes = static_cast<DWORD>(o.done);
      return 0;
    }
    pollfd p{s.fd, static_cast<short>(o.k == op::kind::send ? POLLOUT : POLLIN),
             0};
    ::poll(&p, 1, 100);
  }
}

int rw(SOCKET h, LPWSABUF bufs, DWORD count, LPDWORD bytes, LPWSAOVERLAPPED ov,
       LPWSAOVERLAPPED_COMPLETION_ROUTINE routine, bool sending) {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (routine) return fail(WSAEOPNOTSUPP, SOCKET_ERROR);  // not modelled
  if (!bufs && count) return fail(WSAEFAULT, SOCKET_ERROR);
  op o;
  o.iov = iov_of(bufs, count, o.total);
  o.k = sending   ? op::kind::send
        : o.total ? op::kind::recv
                  : op::kind::recv_ready;
  o.ov = ov;
  if (!ov) return blocking(*s, o, bytes);
  std::lock_guard g(s->m);
  if (s->closed) return fail(WSAENOTSOCK, SOCKET_ERROR);
  if (s->state != sock_state::connected) return fail(WSAENOTCONN, SOCKET_ERROR);
  // WSARecv/WSASend: WSAEWOULDBLOCK means too many outstanding overlapped
  // requests; WSASend: WSAENOBUFS, no buffer space.
  if (roll(fault::wouldblock_io, s->serial,
           s->next_decision(fault::wouldblock_io))) {
    return fail(WSAEWOULDBLOCK, SOCKET_ERROR);
  }
  if (sending && roll(fault::enobufs_send, s->serial,
                      s->next_decision(fault::enobufs_send))) {
    return fail(WSAENOBUFS, SOCKET_ERROR);
  }
  const DWORD err = issue(s, std::move(o), bytes);
  if (err) return fail(err, SOCKET_ERROR);
  return 0;
}

// Takes every pending operation of `s` that `ov` names (all if null) out
// of its queues, and completes each with `error`.
bool abort_ops(sim_socket& s, LPOVERLAPPED ov, DWORD error) {
  bool any = false;
  for (std::deque<op>* q : {&s.recvs, &s.sends, &s.accepts}) {
    for (auto it = q->begin(); it != q->end();) {
      if (ov && it->ov != ov) {
        ++it;
        continue;
      }
      op o = std::move(*it);
      it = q->erase(it);
      complete(s, o, error);
      any = true;
    }
  }
  if (s.disconnect && (!ov || s.disconnect->ov == ov)) {
    op o = std::move(*s.disconnect);
    s.disconnect.reset();
    s.state = sock_state::unusable;  // neither connected nor reusable
    complete(s, o, error);
    any = true;
  }
  if (s.connect && (!ov || s.connect->ov == ov)) {
    finish_connect(s, error);  // the socket is unusable after it
    any = true;
  }
  return any;
}

}  // namespace

void complete(sim_socket& s, op& o, DWORD wsa_error) {
  o.ov->InternalHigh = o.done;
  o.ov->Internal = status_of(wsa_error);
  if (s.cport) s.cport->post(s.key, o.ov, static_cast<DWORD>(o.done));
}

void progress(sim_socket& s) {
  if (s.closed) return;
  if (s.state == sock_state::listening) {
    drain(s, s.accepts);
    check_fd_accept(s);
  } else if (s.state == sock_state::connected) {
    drain(s, s.recvs);
    drain(s, s.sends);
  } else if (s.state == sock_state::connecting && s.connect) {
    DWORD err = 0;
    if (try_connect(s, *s.connect, err) == outcome::done) {
      finish_connect(s, err);
      // Reads may have been issued right after the packet was taken.
      if (s.state == sock_state::connected) progress(s);
    }
  }
}

// WSAEventSelect remarks: FD_ACCEPT is recorded when a connection is
// waiting to be accepted, and once recorded, it is not recorded again until
// the re-enabling function is called. The simulator counts AcceptEx as
// that function (as accept is), so a listener whose posted accepts run out
// again records it again.
void check_fd_accept(sim_socket& s) {
  if (!(s.select_mask & FD_ACCEPT) || !s.select_event || !s.accepts.empty() ||
      !s.fd_accept_enabled) {
    return;
  }
  pollfd p{s.fd, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) return;
  s.recorded |= FD_ACCEPT;
  s.fd_accept_enabled = false;
  ++s.fd_accepts;
  signal(*s.select_event);
}

void disconnect_due(sim_socket& s) {
  std::lock_guard g(s.m);
  if (!s.disconnect || s.disconnect->due > now_ms()) return;
  op o = std::move(*s.disconnect);
  s.disconnect.reset();
  s.state = sock_state::fresh;  // reusable: AcceptEx may take it
  complete(s, o, 0);
}

int tcp_state(int fd) noexcept {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  return info.tcpi_state;
}

BOOL accept_ex(SOCKET listen_socket, SOCKET accept_socket, PVOID output,
               DWORD receive_bytes, DWORD local_address_bytes,
               DWORD remote_address_bytes, LPDWORD received, LPOVERLAPPED ov) {
  auto l = find_as<sim_socket>(listen_socket);
  auto a = find_as<sim_socket>(accept_socket);
  if (!l || !a) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (!output || !ov) return fail(WSAEFAULT, BOOL{FALSE});
  // Waiting for the first data is not modelled (the backend asks for none).
  if (receive_bytes != 0) return fail(WSAEOPNOTSUPP, BOOL{FALSE});
  // AcceptEx remarks: each address area must be at least 16 bytes more
  // than the largest address of the transport.
  const DWORD need =
      (l->family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)) + 16;
  if (local_address_bytes < need || remote_address_bytes < need) {
    return fail(WSAEINVAL, BOOL{FALSE});
  }
  {
    std::lock_guard g(a->m);
    // The accept socket must be neither bound nor connected.
    if (a->state != sock_state::fresh) return fail(WSAEINVAL, BOOL{FALSE});
  }
  std::lock_guard g(l->m);
  if (l->closed) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (l->state != sock_state::listening) return fail(WSAEINVAL, BOOL{FALSE});
  if (roll(fault::enobufs_accept, l->serial,
           l->next_decision(fault::enobufs_accept))) {
    return fail(WSAENOBUFS, BOOL{FALSE});
  }
  // AcceptEx's WSAECONNRESET: "an incoming connection was indicated, but
  // was subsequently terminated by the remote peer prior to accepting the
  // call". The client that reset is made up (none of the real ones is
  // taken): the call fails at once, and the clients still waiting stay in
  // the backlog for the next AcceptEx. Not a shortage: retrying at once is
  // right.
  if (roll(fault::reset_accept, l->serial,
           l->next_decision(fault::reset_accept))) {
    return fail(WSAECONNRESET, BOOL{FALSE});
  }
  // The network subsystem failed: the call was taken (ERROR_IO_PENDING) and
  // its completion reports WSAENETDOWN, which WSAGetOverlappedResult's
  // documentation lists ("The network subsystem has failed"). No client is
  // taken; the ones waiting stay in the backlog. A failure that lasts as
  // long as the network is down: at rate 1 every AcceptEx ends so, at once.
  if (roll(fault::netdown_accept, l->serial,
           l->next_decision(fault::netdown_accept))) {
    op o;
    o.k = op::kind::accept;
    o.ov = ov;
    ov->Internal = status_pending;
    ov->InternalHigh = 0;
    complete(*l, o, WSAENETDOWN);
    return fail(WSA_IO_PENDING, BOOL{FALSE});
  }
  // Re-enables FD_ACCEPT (see check_fd_accept), unless the fault says the
  // provider does not.
  if (!l->fd_accept_enabled && !roll(fault::fd_accept_once, l->serial,
                                     l->next_decision(fault::fd_accept_once))) {
    l->fd_accept_enabled = true;
  }
  op o;
  o.k = op::kind::accept;
  o.ov = ov;
  o.accept_into = std::move(a);
  o.out = static_cast<char*>(output);
  o.local_bytes = local_address_bytes;
  o.remote_bytes = remote_address_bytes;
  const DWORD err = issue(l, std::move(o), received);
  if (err) return fail(err, BOOL{FALSE});
  return TRUE;
}

void get_accept_ex_sockaddrs(PVOID output, DWORD receive_bytes,
                             DWORD local_address_bytes, DWORD, sockaddr** local,
                             int* local_length, sockaddr** remote,
                             int* remote_length) {
  char* base = static_cast<char*>(output) + receive_bytes;
  sockaddr* l = address_in(base);
  sockaddr* r = address_in(base + local_address_bytes);
  if (local) *local = l;
  if (local_length) *local_length = length_of(l);
  if (remote) *remote = r;
  if (remote_length) *remote_length = length_of(r);
}

BOOL disconnect_ex(SOCKET h, LPOVERLAPPED ov, DWORD flags, DWORD) {
  auto sp = find_as<sim_socket>(h);
  if (!sp) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (!ov)
    return fail(WSAEOPNOTSUPP, BOOL{FALSE});  // blocking form: not modelled
  sim_socket& s = *sp;
  std::lock_guard g(s.m);
  if (s.closed) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (s.state != sock_state::connected) return fail(WSAENOTCONN, BOOL{FALSE});
  abort_ops(s, nullptr, WSA_OPERATION_ABORTED);
  // Active close: our FIN left before the peer's arrived (then the
  // connection passes through TIME_WAIT on our side). Linux's TCP state
  // tells: CLOSE_WAIT means the peer's FIN came first.
  bool active = s.active_close;
  if (!s.fin_sent) {
    const int st = tcp_state(s.fd);
    active = st != TCP_CLOSE_WAIT && st != TCP_CLOSE;
    ::shutdown(s.fd, SHUT_WR);
  }
  // The connection is handed to Linux to finish (its TIME_WAIT is Linux's
  // own); the socket gets a fresh, unconnected descriptor under the same
  // number.
  kernel_unwatch(s);
  const int fresh =
      ::socket(s.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fresh >= 0) {
    ::dup3(fresh, s.fd, O_CLOEXEC);
    ::close(fresh);
  }
  s.accepted = false;
  s.fin_sent = false;
  s.active_close = false;
  s.latched = 0;
  const bool reuse = (flags & TF_REUSE_SOCKET) && fresh >= 0;
  ov->Internal = status_pending;
  ov->InternalHigh = 0;
  if (enabled(fault::wine_disconnect)) {
    // Wine's WS2_DisconnectEx (measured by this project with Wine 8.0):
    // the shutdown is done at once and the OVERLAPPED shows success, but
    // the call turns that success into STATUS_PENDING (FALSE,
    // ERROR_IO_PENDING). On a socket in skip-on-success mode it then
    // queues no packet: only polling Internal can see the end. On any
    // other socket the packet is queued. (Wine also ignores
    // TF_REUSE_SOCKET; the backend closes such sockets under Wine, so the
    // socket's reusability is left as on Windows here.)
    s.state = reuse ? sock_state::fresh : sock_state::unusable;
    ov->Internal = 0;
    if (s.cport && !s.skip_on_success) {
      s.cport->post(s.key, ov, 0);
    } else if (s.cport) {
      // The fault's rate: on a skip-on-success socket a packet comes
      // after all, 0-99 ms late, as from a Wine that fixed the lost
      // packet (an operation that returned ERROR_IO_PENDING queues one by
      // Microsoft's rules). A backend that polls such a DisconnectEx
      // would then see it finish twice.
      const std::uint64_t d = s.next_decision(fault::wine_disconnect);
      if (roll(fault::wine_disconnect, s.serial, d)) {
        s.cport->post(s.key, ov, 0,
                      pick(fault::wine_disconnect, s.serial, d, 100));
      }
    }
    return fail(WSA_IO_PENDING, BOOL{FALSE});
  }
  if (!active &&
      roll(fault::inline_pend, s.serial, s.next_decision(fault::inline_pend))) {
    // Finished at once (the passive side has nothing left to wait for).
    s.state = reuse ? sock_state::fresh : sock_state::unusable;
    ov->Internal = 0;
    if (s.cport && !s.skip_on_success) s.cport->post(s.key, ov, 0);
    return TRUE;
  }
  s.state = reuse ? sock_state::disconnecting : sock_state::unusable;
  op o;
  o.k = op::kind::disconnect;
  o.ov = ov;
  // now_ms() is truncated to the millisecond: one more, so TIME_WAIT is
  // never cut short by up to a millisecond.
  o.due = now_ms() + (active ? time_wait_ms() + 1 : 0);
  const std::uint64_t due = o.due;
  s.disconnect = std::move(o);
  kernel_timer(sp, due);
  return fail(WSA_IO_PENDING, BOOL{FALSE});
}

BOOL connect_ex(SOCKET h, const sockaddr* name, int namelen, PVOID send_buffer,
                DWORD send_bytes, LPDWORD sent, LPOVERLAPPED ov) {
  auto sp = find_as<sim_socket>(h);
  if (!sp) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (!ov || !name) return fail(WSAEFAULT, BOOL{FALSE});
  // Sending first data with the connect is not modelled (the backend
  // sends none).
  if (send_buffer && send_bytes) return fail(WSAEOPNOTSUPP, BOOL{FALSE});
  if (sent) *sent = 0;
  sim_socket& s = *sp;
  std::lock_guard g(s.m);
  if (s.closed) return fail(WSAENOTSOCK, BOOL{FALSE});
  // ConnectEx's errors: WSAEINVAL, "the parameter s is an unbound or a
  // listening socket"; WSAEALREADY, a ConnectEx already in progress;
  // WSAEISCONN, connected already.
  if (s.state == sock_state::listening || !s.bound)
    return fail(WSAEINVAL, BOOL{FALSE});
  if (s.state == sock_state::connecting) return fail(WSAEALREADY, BOOL{FALSE});
  if (s.state != sock_state::fresh) return fail(WSAEISCONN, BOOL{FALSE});
  const int need = s.family == AF_INET6 ? static_cast<int>(sizeof(sockaddr_in6))
                                        : static_cast<int>(sizeof(sockaddr_in));
  if (namelen < need) return fail(WSAEFAULT, BOOL{FALSE});
  if (name->sa_family != s.family) return fail(WSAEAFNOSUPPORT, BOOL{FALSE});
  // Faults, decided in one draw per call: no route (fails at once, as
  // ConnectEx's WSAENETUNREACH does), a refusal, or a SYN never answered.
  const std::uint64_t d = s.next_decision(fault::unreachable_connect);
  if (roll(fault::unreachable_connect, s.serial, d))
    return fail(WSAENETUNREACH, BOOL{FALSE});
  op o;
  o.k = op::kind::connect;
  o.ov = ov;
  o.forced = roll(fault::refuse_connect, s.serial, d) ? WSAECONNREFUSED : 0;
  o.silent = !o.forced && roll(fault::silent_connect, s.serial, d);
  ov->Internal = status_pending;
  ov->InternalHigh = 0;
  if (!o.forced && !o.silent) {
    const int r = ::connect(s.fd, name, static_cast<socklen_t>(namelen));
    const int e = r == 0 ? 0 : errno;
    if (r == 0) {
      // Connected at once: done, with a packet unless skip-on-success.
      connected_by_connect_ex(s);
      kernel_watch(s);
      ov->Internal = 0;
      if (s.cport && !s.skip_on_success) s.cport->post(s.key, ov, 0);
      return TRUE;
    }
    if (e == ENETUNREACH || e == EHOSTUNREACH || e == EACCES ||
        e == EADDRNOTAVAIL || e == EAFNOSUPPORT) {
      // No route (255.255.255.255 is one: Linux refuses TCP to a
      // broadcast address with ENETUNREACH): ConnectEx fails at once.
      return fail(
          static_cast<DWORD>(wsa_from_errno(e == EACCES ? ENETUNREACH : e)),
          BOOL{FALSE});
    }
    // Anything else Linux knows at once (a refusal on the loopback) still
    // reaches Windows' caller through the completion.
    if (e != EINPROGRESS) o.forced = static_cast<DWORD>(wsa_from_errno(e));
  }
  s.connect = std::move(o);
  s.state = sock_state::connecting;
  if (s.connect->forced) {
    kernel_kick(sp);
  } else if (!s.connect->silent) {
    kernel_watch(s);  // EPOLLOUT (or an error) when Linux's connect ends
  }
  return fail(WSA_IO_PENDING, BOOL{FALSE});
}

}  // namespace winsim

using namespace winsim;

int WSARecv(SOCKET s, LPWSABUF bufs, DWORD count, LPDWORD received,
            LPDWORD flags, LPWSAOVERLAPPED ov,
            LPWSAOVERLAPPED_COMPLETION_ROUTINE routine) noexcept {
  if (flags) *flags = 0;
  return rw(s, bufs, count, received, ov, routine, false);
}

int WSASend(SOCKET s, LPWSABUF bufs, DWORD count, LPDWORD sent, DWORD,
            LPWSAOVERLAPPED ov,
            LPWSAOVERLAPPED_COMPLETION_ROUTINE routine) noexcept {
  return rw(s, bufs, count, sent, ov, routine, true);
}

// WSAGetOverlappedResult: the byte count and, when the status is not
// success, the Winsock error for it; WSA_IO_INCOMPLETE while pending (the
// wait form is not modelled: nothing here waits for a single operation).
BOOL WSAGetOverlappedResult(SOCKET h, LPWSAOVERLAPPED ov, LPDWORD bytes, BOOL,
                            LPDWORD flags) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s) return fail(WSAENOTSOCK, BOOL{FALSE});
  if (!ov || !bytes) return fail(WSAEFAULT, BOOL{FALSE});
  ULONG_PTR status;
  {
    std::lock_guard g(s->m);  // the kernel thread writes it under this lock
    status = ov->Internal;
    *bytes = static_cast<DWORD>(ov->InternalHigh);
  }
  if (flags) *flags = 0;
  if (status == status_pending) return fail(WSA_IO_INCOMPLETE, BOOL{FALSE});
  if (status == 0) return TRUE;
  return fail(wsa_of(status), BOOL{FALSE});
}

BOOL CancelIoEx(HANDLE h, LPOVERLAPPED ov) noexcept {
  auto s = find_as<sim_socket>(reinterpret_cast<std::uintptr_t>(h));
  if (!s) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  std::lock_guard g(s->m);
  if (!abort_ops(*s, ov, WSA_OPERATION_ABORTED))
    return fail(ERROR_NOT_FOUND, BOOL{FALSE});
  return TRUE;
}

// closesocket remarks: pending overlapped operations on the socket are
// cancelled; with SO_LINGER {1, 0} the connection is reset (Linux does the
// same with the same option, which setsockopt passed on).
int closesocket(SOCKET h) noexcept {
  auto s = find_as<sim_socket>(h);
  if (!s || !remove_handle(h, object_type::socket))
    return fail(WSAENOTSOCK, SOCKET_ERROR);
  std::lock_guard g(s->m);
  s->closed = true;
  abort_ops(*s, nullptr, WSA_OPERATION_ABORTED);
  kernel_unwatch(*s);
  unregister_socket(s->serial);
  ::close(s->fd);
  s->fd = -1;
  s->select_event.reset();
  return 0;
}
