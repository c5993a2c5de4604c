// The accept pool: sockets made before clients arrive, each posted with
// AcceptEx on the listening socket. Under a burst of connects a plain
// accept() fails with WSAENOBUFS once the system cannot make socket
// resources fast enough; AcceptEx has them ready. Every completion posts a
// replacement. When the posted accepts run out (the listener signals
// FD_ACCEPT: a connection is waiting and no AcceptEx is there to take it;
// Wine 8 signals it too), the pool doubles, never past max_connections. A
// socket whose peer closed first comes back through
// DisconnectEx(TF_REUSE_SOCKET) and accepts again (on Windows; under Wine it
// is closed and replaced: see give_back); one we closed first (it holds
// TIME_WAIT) or reset is closed, and its entry gets a new socket. A failed
// accept that was not a client's reset (is_accept_reset) pauses posting
// for a backoff, whether the call or its completion failed: a shortage,
// or an error that lasts (the network down), which posting again at once
// would turn into a loop through the port on every worker.
#include <algorithm>
#include <string>

#include "backends/iocp/engine.hpp"

namespace ionet::iocp {
namespace {

void lock(connection& c) { AcquireSRWLockExclusive(&c.lock); }
void unlock(connection& c) { ReleaseSRWLockExclusive(&c.lock); }

// After a failure that pauses the pool (pause_accepts) accepts are posted
// again after a backoff that doubles up to a second, until one succeeds.
constexpr std::uint32_t min_backoff_ms = 10;
constexpr std::uint32_t max_backoff_ms = 1000;

}  // namespace

status engine_impl::open_listener(const endpoint& ep) {
  if (core_.opts().reuse_port) {
    // Windows has no port sharing with kernel load balancing; its
    // SO_REUSEADDR would let another process steal the port instead.
    return {errc::bad_option, "reuse_port is not supported on Windows (IOCP)"};
  }
  family_ = ep.v6 ? AF_INET6 : AF_INET;
  listen_ = open_tcp_socket(family_);
  if (listen_ == INVALID_SOCKET) {
    return {wsa_error(WSAGetLastError()), "socket() for the listener"};
  }
  // Exclusive use, so a port another socket holds is "in use" here as on
  // Linux (Windows' SO_REUSEADDR would let two listeners share it).
  BOOL yes = TRUE;
  setsockopt(listen_, SOL_SOCKET, SO_EXCLUSIVEADDRUSE,
             reinterpret_cast<const char*>(&yes), sizeof yes);
  if (ep.v6) {
    // Dual-stack on "::", as Linux does by default.
    DWORD no = 0;
    setsockopt(listen_, IPPROTO_IPV6, IPV6_V6ONLY,
               reinterpret_cast<const char*>(&no), sizeof no);
  }
  sockaddr_storage ss;
  const int len = to_sockaddr(ep, ss);
  if (bind(listen_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int err = WSAGetLastError();
    const std::string where = ep.to_string();
    if (err == WSAEADDRINUSE || err == WSAEACCES) {
      return {errc::address_in_use, where + " is already in use"};
    }
    if (err == WSAEADDRNOTAVAIL) {
      return {errc::bad_address, "host " + core_.opts().host +
                                     " is not an address of this machine"};
    }
    return {wsa_error(err), "bind " + where};
  }
  if (listen(listen_, static_cast<int>(std::min<std::uint32_t>(
                          core_.opts().backlog, SOMAXCONN))) != 0) {
    const int err = WSAGetLastError();
    if (err == WSAEADDRINUSE)
      return {errc::address_in_use, ep.to_string() + " is already in use"};
    return {wsa_error(err), "listen"};
  }
  sockaddr_storage bound;
  int blen = sizeof bound;
  getsockname(listen_, reinterpret_cast<sockaddr*>(&bound), &blen);
  port_ = endpoint_of(reinterpret_cast<sockaddr*>(&bound)).port;

  if (status s = load_provider(listen_); !s) return s;
  if (auto ec = cport_.add(listen_))
    return {ec, "associating the listener with the port"};
  // FD_ACCEPT tells that a connection waits with no AcceptEx posted for it.
  accept_event_ = WSACreateEvent();
  if (accept_event_ == WSA_INVALID_EVENT ||
      WSAEventSelect(listen_, accept_event_, FD_ACCEPT) != 0) {
    return {wsa_error(WSAGetLastError()), "WSAEventSelect(FD_ACCEPT)"};
  }
  return {};
}

status engine_impl::load_provider(SOCKET s) {
  std::string missing;
  if (auto ec = load_extensions(s, ext_, missing)) {
    return {errc::unsupported, missing + " is not available: " + ec.message()};
  }
  // Under Wine the mode stays off: Wine's DisconnectEx finishes at once
  // but reports ERROR_IO_PENDING (its WS2_DisconnectEx turns success into
  // STATUS_PENDING), and on a socket in skip-on-success mode it then
  // queues no packet, so nothing would ever finish it; on other sockets
  // the packet comes (both measured with Wine 8.0). With the mode off,
  // every DisconnectEx ends by exactly one road, its packet, as on
  // Windows, whether or not a later Wine fixes that. Wine Staging can hide
  // wine_get_version (hide_wine_exports); running_under_wine() is then
  // false, the mode is set, and each graceful close strands its entry:
  // never given back, its operation never finished, so stop() waits (and
  // warns after 10 s) and, after max_connections + accept_depth such
  // closes, no AcceptEx can be posted.
  skip_mode_safe_ = provider_is_ifs(s) && !running_under_wine();
  return {};
}

std::error_code engine_impl::make_pool() {
  const options& o = core_.opts();
  try {
    conns_.reset(new connection[o.max_connections]);
    // accept_depth more sockets than connections: at max_connections some
    // accepts stay posted, so the excess is accepted, refused and counted
    // instead of waiting in the backlog.
    // An engine that does not listen (options::listen) has no pool.
    entry_count_ = o.listen ? o.max_connections + o.accept_depth : 0;
    entries_.reset(new socket_entry[entry_count_]);
    free_entries_.clear();
    free_entries_.reserve(entry_count_);
    // Nothing of the pool's bookkeeping grows after start.
    watch_list_.reserve(o.max_connections);
  } catch (const std::bad_alloc&) {
    conns_.reset();
    entries_.reset();
    entry_count_ = 0;
    return std::make_error_code(std::errc::not_enough_memory);
  }
  for (std::uint32_t i = 0; i < o.max_connections; ++i) {
    connection& c = conns_[i];
    c.p.slot = i;
    c.read_op.owner = c.write_op.owner = i;
    c.connect_op.owner = i;
    c.read_op.complete = &engine_impl::on_read;
    c.write_op.complete = &engine_impl::on_write;
    c.connect_op.complete = &engine_impl::on_connect;
  }
  for (std::uint32_t i = 0; i < entry_count_; ++i) {
    socket_entry& e = entries_[i];
    e.index = i;
    e.accept_op.owner = e.disconnect_op.owner = i;
    e.accept_op.complete = &engine_impl::on_accept;
    e.disconnect_op.complete = &engine_impl::on_disconnect;
    free_entries_.push_back(entry_count_ - 1 - i);  // entry 0 is posted first
  }
  posted_accepts_ = 0;
  accepts_closed_ = false;
  accept_target_ = o.listen ? std::min(o.accept_depth, o.max_connections) : 0;
  retry_after_ms_ = 0;
  retry_backoff_ms_ = 0;
  return {};
}

std::uint32_t engine_impl::top_up_accepts() {
  std::lock_guard g(accept_lock_);
  if (accepts_closed_ || gate_.stopping() || listen_ == INVALID_SOCKET)
    return 0;
  if (retry_after_ms_) {
    if (GetTickCount64() < retry_after_ms_) return 0;
    retry_after_ms_ = 0;  // a new failure sets it again, backing off further
  }
  // From the back (the most recently freed entries first). An entry whose
  // post failed with a client's reset stays free and the next one is
  // tried, as many failures as accepts were missing (so a listener that
  // resets every post does not cost a socket per free entry each round);
  // any other failure pauses the pool and ends the round.
  std::uint32_t posted_now = 0;
  std::uint32_t failures_left =
      accept_target_ > posted_accepts_ ? accept_target_ - posted_accepts_ : 0;
  for (std::size_t i = free_entries_.size();
       i > 0 && posted_accepts_ < accept_target_;) {
    --i;
    const posted r = post_accept(entries_[free_entries_[i]]);
    if (r == posted::paused) break;
    if (r == posted::ok) {
      free_entries_.erase(free_entries_.begin() +
                          static_cast<std::ptrdiff_t>(i));
      ++posted_accepts_;
      ++posted_now;
    } else if (--failures_left == 0) {
      break;
    }
  }
  accepts_pending_.store(posted_accepts_, std::memory_order_relaxed);
  return posted_now;
}

void engine_impl::pause_accepts() {
  retry_backoff_ms_ =
      std::clamp(retry_backoff_ms_ * 2, min_backoff_ms, max_backoff_ms);
  retry_after_ms_ = GetTickCount64() + retry_backoff_ms_;
}

DWORD engine_impl::accept_retry_wait(DWORD longest) {
  // The housekeeper posts accepts again as soon as a pause's backoff has
  // passed, not at its next round: otherwise each pause would stall
  // accepting for a whole round, whatever the backoff.
  std::lock_guard g(accept_lock_);
  if (!retry_after_ms_) return longest;
  const std::uint64_t now = GetTickCount64();
  if (now >= retry_after_ms_) return 0;
  return static_cast<DWORD>(
      std::min<std::uint64_t>(longest, retry_after_ms_ - now));
}

engine_impl::posted engine_impl::post_accept(socket_entry& e) {
  // With accept_lock_ held.
  auto failed = [&](int error) {
    accept_failures_.fetch_add(1, std::memory_order_relaxed);
    if (is_accept_reset(error)) return posted::failed;
    pause_accepts();
    return posted::paused;
  };
  if (e.s == INVALID_SOCKET) {
    e.s = open_tcp_socket(family_);
    if (e.s == INVALID_SOCKET) return failed(WSAGetLastError());
    if (cport_.add(e.s)) {
      const int err = static_cast<int>(GetLastError());
      closesocket(e.s);
      e.s = INVALID_SOCKET;
      return failed(err);
    }
    // Operations that complete at once are finished by the caller, with no
    // packet through the port: one kernel transition less per I/O. Under a
    // non-IFS layered provider the mode can lose completions (KB2568167),
    // and where it cannot be set every completion comes through the port:
    // then the code takes that path instead.
    e.skip_on_success =
        skip_mode_safe_ && SetFileCompletionNotificationModes(
                               reinterpret_cast<HANDLE>(e.s),
                               FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                   FILE_SKIP_SET_EVENT_ON_HANDLE) != FALSE;
    e.reused = false;
    sockets_created_.fetch_add(1, std::memory_order_relaxed);
  } else if (e.reused) {
    sockets_reused_.fetch_add(1, std::memory_order_relaxed);
  }
  e.accept_op.prepare(op_kind::accept, listen_);
  op_started();
  DWORD bytes = 0;
  // The listener is not in skip-on-success mode: even an AcceptEx that
  // succeeds at once completes through the port. A post that was taken
  // does not end a pause's backoff: its completion may still fail (the
  // network down); an accept that succeeds does (accept_done).
  if (ext_.accept_ex(listen_, e.s, e.addresses, 0, socket_entry::address_bytes,
                     socket_entry::address_bytes, &bytes, &e.accept_op.ov) ||
      WSAGetLastError() == ERROR_IO_PENDING) {
    return posted::ok;
  }
  const int err = WSAGetLastError();
  op_finished();
  // The socket may be unusable after a failed AcceptEx: make a new one.
  closesocket(e.s);
  e.s = INVALID_SOCKET;
  return failed(err);
}

void engine_impl::give_back(socket_entry& e, bool reusable) {
  // Wine's DisconnectEx ignores TF_REUSE_SOCKET: it only shuts down the
  // send side (its source: "Reusing socket not supported yet"), so the
  // socket stays connected to the old peer and is never fit to accept
  // again (an AcceptEx into it completes, but its reads never do: measured
  // with the conformance suite). Under Wine the socket is closed instead
  // and the entry gets a new one.
  if (reusable && running_under_wine()) reusable = false;
  {
    // Under the pool's lock: close_all() reads every entry's socket to
    // cancel DisconnectEx calls, and must not see one closed under it.
    std::lock_guard g(accept_lock_);
    if (!reusable && e.s != INVALID_SOCKET) {
      closesocket(e.s);
      e.s = INVALID_SOCKET;
    }
    e.reused = reusable;
    free_entries_.push_back(e.index);
  }
  top_up_accepts();
}

void engine_impl::abort_socket(socket_entry& e) {
  // SO_LINGER {on, 0 s}: closesocket resets the connection at once.
  linger l{1, 0};
  setsockopt(e.s, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l),
             sizeof l);
  give_back(e, false);
}

void engine_impl::grow_accepts() {
  std::lock_guard g(accept_lock_);
  const std::uint32_t cap = core_.opts().max_connections;
  if (accept_target_ >= cap) return;
  accept_target_ = std::min(cap, accept_target_ * 2);
  accept_growths_.fetch_add(1, std::memory_order_relaxed);
}

void engine_impl::check_listener() {
  if (listen_ == INVALID_SOCKET) return;  // options::listen is false
  WSANETWORKEVENTS ne{};
  if (WSAEnumNetworkEvents(listen_, accept_event_, &ne) == 0 &&
      (ne.lNetworkEvents & FD_ACCEPT)) {
    grow_accepts();
  }
}

void engine_impl::on_accept(engine_impl& e, operation& op,
                            const completion& c) {
  e.accept_done(e.entries_[op.owner], c.error);
  e.op_finished();
}

void engine_impl::accept_done(socket_entry& entry, DWORD error) {
  const bool stopping = gate_.stopping();
  {
    std::lock_guard g(accept_lock_);
    --posted_accepts_;
    accepts_pending_.store(posted_accepts_, std::memory_order_relaxed);
    if (!stopping && error) {
      // A client that reset before we took it: the entry accepts again at
      // once, with a new socket. Anything else (a shortage, the network
      // down) fails the next post's completion too: paused.
      accept_failures_.fetch_add(1, std::memory_order_relaxed);
      if (!is_accept_reset(static_cast<int>(error))) pause_accepts();
    } else if (!stopping) {
      // Whatever paused the pool is over: no more backing off.
      retry_backoff_ms_ = 0;
      retry_after_ms_ = 0;
    }
  }
  if (stopping || error) {
    give_back(entry, false);
    return;
  }
  top_up_accepts();  // the replacement, before this connection's work

  // Without the listener's context the socket is not a full connection
  // (getpeername, shutdown and DisconnectEx fail on it): a failed accept.
  if (setsockopt(entry.s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                 reinterpret_cast<const char*>(&listen_),
                 sizeof listen_) != 0) {
    accept_failures_.fetch_add(1, std::memory_order_relaxed);
    give_back(entry, false);
    return;
  }
  sockaddr* local = nullptr;
  sockaddr* remote = nullptr;
  int local_len = 0;
  int remote_len = 0;
  ext_.get_accept_ex_sockaddrs(entry.addresses, 0, socket_entry::address_bytes,
                               socket_entry::address_bytes, &local, &local_len,
                               &remote, &remote_len);
  const endpoint peer = endpoint_of(remote);

  auto id = core_.open_slot(0);
  if (!id) {
    // max_connections are open: refused (counted by open_slot) with a
    // reset. DisconnectEx would close first from our side and keep the
    // socket in TIME_WAIT for minutes (see may_reuse_socket), and the
    // client learns at once that it was turned away.
    abort_socket(entry);
    return;
  }
  connection& c = conns_[detail::slot_of(*id)];
  lock(c);
  if (gate_.stopping()) {
    // The stop began after the check above: close_all() may have swept
    // this slot already (it takes the same lock, after stopping is set),
    // and a connection opened now would keep a read pending forever.
    core_.cancel_open(detail::slot_of(*id));
    unlock(c);
    give_back(entry, false);
    return;
  }
  open_connection(c, entry, *id, peer);
  core_.deliver(detail::thread_batch());
  unlock(c);
}

void engine_impl::disconnect(socket_entry& e) {
  e.disconnect_op.prepare(op_kind::disconnect, e.s);
  op_started();
  if (ext_.disconnect_ex(e.s, &e.disconnect_op.ov, TF_REUSE_SOCKET, 0)) {
    if (!e.skip_on_success) return;  // the packet comes through the port
    op_finished();
    give_back(e, true);
    return;
  }
  // Pending: the packet comes through the port (never polled: see
  // skip_mode_safe_ in open_listener).
  if (WSAGetLastError() == ERROR_IO_PENDING) return;
  op_finished();
  give_back(e, false);
}

void engine_impl::on_disconnect(engine_impl& e, operation& op,
                                const completion& c) {
  socket_entry& entry = e.entries_[op.owner];
  e.give_back(entry, c.error == 0 && !e.gate_.stopping());
  e.op_finished();
}

}  // namespace ionet::iocp
