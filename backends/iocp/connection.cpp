// The IOCP backend's per-connection I/O: reads, sliced gathered writes and
// the close protocol. Every function here runs with the connection's lock
// held, on whichever thread processes the connection at the moment.
//
// Reads: a zero-byte WSARecv waits for data, so an idle connection holds no
// read buffer; when it completes, a WSARecv into pool slices takes what is
// there and common/ decodes it. Every data read, also one that filled all
// its slices, is followed by a zero-byte read, never by another data read:
// a data read that pends holds 128 slices until the peer sends again, and
// ~625 idle connections whose last read was full would pin the default
// pool. With skip-on-success the zero-byte read completes at once when
// more is waiting, so a busy connection pays one call per 64 KiB. (libuv
// instead reads non-blocking until WSAEWOULDBLOCK; that needs FIONBIO on
// every socket and a second read path, for the same saving.) The slices
// reads hold at once are capped (read_budget_), so that reads never take
// the part of the pool that send() copies into.
//
// Writes: the core's queue of slices goes out in WSASends that gather up to
// `gather_max` slices; a slice goes back to the pool only when its WSASend
// has completed.
//
// Close: graceful (close(), or the peer's EOF once the replies are out)
// shuts down our side, waits for the peer's FIN (or `linger_ms`), and
// closes the socket; after the peer's EOF it returns the socket to the
// accept pool through DisconnectEx (detail::may_reuse_socket). Abortive (an
// error, an oversized frame, stop()) cancels what is in flight and resets.
// Either way the slot is recycled only when no operation on it is left.
#include <algorithm>

#include "backends/iocp/engine.hpp"

namespace ionet::iocp {
namespace {

// One data read takes up to 64 KiB of slices.
constexpr std::uint32_t read_bytes_max = 64 * 1024;
constexpr std::uint32_t read_slices_max = 128;
// Reads finished at once in a row before the connection yields to others
// (it continues through the port).
constexpr int inline_reads_max = 16;
using detail::gather_max;

void lock(connection& c) { AcquireSRWLockExclusive(&c.lock); }
void unlock(connection& c) { ReleaseSRWLockExclusive(&c.lock); }

WSABUF buf_of(void* data, std::uint32_t len) {
  WSABUF b;
  b.buf = static_cast<CHAR*>(data);
  b.len = len;
  return b;
}

}  // namespace

void engine_impl::watch(std::uint32_t slot) {
  std::lock_guard g(watch_lock_);
  if (conns_[slot].watched) return;  // already on the list for the next round
  conns_[slot].watched = true;
  watch_list_.push_back(slot);
}

void engine_impl::open_connection(connection& c, socket_entry& entry,
                                  connection_id id, const endpoint& peer) {
  c.p.open(detail::generation_of(id));
  c.entry = &entry;
  c.s = entry.s;
  c.skip_on_success = entry.skip_on_success;
  c.starved = false;
  c.paused = false;
  BOOL nodelay = TRUE;
  setsockopt(c.s, IPPROTO_TCP, TCP_NODELAY,
             reinterpret_cast<const char*>(&nodelay), sizeof nodelay);
  set_keepalive(c.s, core_.opts());
  core_.emit_connected(c.p.slot, peer, detail::thread_batch());
  read_loop(c, next_read::ready);
}

// --- reads --------------------------------------------------------------

void engine_impl::read_loop(connection& c, next_read next) {
  for (int round = 0; next != next_read::none; ++round) {
    if (!c.p.live()) return;
    if (round == inline_reads_max) {
      // Let other connections' completions run: the rest of this one's
      // input is read when this packet comes back from the port, as if a
      // zero-byte read had completed.
      c.read_op.prepare(op_kind::read_ready, c.s);
      c.read_op.generation = c.p.generation;
      c.p.reading = true;
      ++c.p.in_flight;
      op_started();
      if (cport_.post(0, &c.read_op.ov)) return;
      c.p.reading = false;
      --c.p.in_flight;
      op_finished();
      round = 0;  // the port is full: carry on here instead
    }
    completion done;
    if (!issue_read(c, next == next_read::data, done)) return;
    next = read_done(c, done);
  }
}

bool engine_impl::take_read_buffers(std::uint32_t want,
                                    detail::slice_chain& out) {
  // Reserve from the budget first, then take the slices: reads on other
  // workers cannot overshoot it between the two.
  std::uint32_t held = read_slices_.load(std::memory_order_relaxed);
  std::uint32_t n;
  do {
    if (held >= read_budget_) return false;
    n = std::min(want, read_budget_ - held);
  } while (!read_slices_.compare_exchange_weak(held, held + n,
                                               std::memory_order_relaxed));
  auto& pool = core_.slices();
  if (pool.take_chain(n, out) || (n > 1 && pool.take_chain(1, out))) {
    if (out.count < n)
      read_slices_.fetch_sub(n - out.count, std::memory_order_relaxed);
    return true;
  }
  read_slices_.fetch_sub(n, std::memory_order_relaxed);
  return false;
}

void engine_impl::give_read_buffers(detail::slice_chain& chain) {
  read_slices_.fetch_sub(chain.count, std::memory_order_relaxed);
  core_.slices().give_chain(chain);
}

bool engine_impl::issue_read(connection& c, bool data, completion& done) {
  operation& op = c.read_op;
  op.prepare(data ? op_kind::read : op_kind::read_ready, c.s);
  op.generation = c.p.generation;
  // On the stack (2 KiB): the system captures the array during the call,
  // so it need not outlive it, and nothing is allocated after start.
  WSABUF bufs[read_slices_max];
  DWORD nbufs = 0;
  if (data) {
    auto& pool = core_.slices();
    const std::uint32_t unit = pool.slice_bytes();
    const std::uint32_t want =
        std::clamp<std::uint32_t>(read_bytes_max / unit, 1, read_slices_max);
    detail::slice_chain chain;
    if (!take_read_buffers(want, chain)) {
      // Reads hold their share of the pool, or every slice is queued for
      // sending somewhere: read again when the housekeeper looks, rather
      // than spin.
      c.starved = true;
      watch(c.p.slot);
      return false;
    }
    for (std::uint32_t s = chain.head; s != detail::no_slice;
         s = pool.next(s)) {
      bufs[nbufs++] = buf_of(pool.data(s), unit);
    }
    op.buffers = chain;
  } else {
    bufs[nbufs++] = buf_of(nullptr, 0);
  }
  c.p.reading = true;
  ++c.p.in_flight;
  op_started();
  DWORD bytes = 0;
  DWORD flags = 0;
  if (WSARecv(c.s, bufs, nbufs, &bytes, &flags, &op.ov, nullptr) == 0) {
    if (!c.skip_on_success) return false;  // the port brings it
    done.error = overlapped_result(c.s, &op.ov, done.bytes);
    return true;
  }
  const int err = WSAGetLastError();
  if (err == WSA_IO_PENDING) return false;
  if (is_resource_shortage(err)) {
    // The system is short of buffers or of overlapped requests, not the
    // connection: the read was never started; the housekeeper issues it
    // again, as for a read that found no slices.
    c.p.reading = false;
    --c.p.in_flight;
    op_finished();
    give_read_buffers(op.buffers);
    c.starved = true;
    watch(c.p.slot);
    return false;
  }
  done.error = static_cast<DWORD>(err);  // never started: finish it here
  return true;
}

engine_impl::next_read engine_impl::read_done(connection& c,
                                              const completion& done) {
  operation& op = c.read_op;
  c.p.reading = false;
  --c.p.in_flight;
  op_finished();
  auto& pool = core_.slices();
  detail::slice_chain chain = op.buffers;
  op.buffers = detail::slice_chain{};

  if (c.p.state == phase::draining) {
    give_read_buffers(chain);
    maybe_finish(c);
    return next_read::none;
  }
  if (done.error) {
    give_read_buffers(chain);
    if (detail::end_abruptly(c.p) == detail::abrupt::close) {
      begin_close(c, close_reason_of(done.error), false);
    } else {
      maybe_finish(c);
    }
    return next_read::none;
  }
  if (op.kind == op_kind::read_ready) return next_read::data;
  if (done.bytes == 0) {
    give_read_buffers(chain);
    on_eof(c);
    return next_read::none;
  }
  const std::uint32_t unit = pool.slice_bytes();
  if (c.p.state == phase::open) {
    std::size_t left = done.bytes;
    std::error_code ec;
    for (std::uint32_t s = chain.head; s != detail::no_slice && left && !ec;
         s = pool.next(s)) {
      const std::size_t n = std::min<std::size_t>(left, unit);
      ec = core_.on_read(c.p.slot, {pool.data(s), n}, detail::thread_batch());
      left -= n;
    }
    // Inline handlers see views into the slices: deliver before they go.
    // The messages before a bad frame are delivered while the connection
    // is still open (their handlers may answer); then it closes.
    core_.deliver(detail::thread_batch());
    if (ec) {
      begin_close(c, ec, false);
      give_read_buffers(chain);
      return next_read::none;
    }
  }
  // Lingering: the bytes are discarded; we only wait for the peer's EOF.
  give_read_buffers(chain);
  if (c.p.state == phase::open && core_.should_pause_reading(c.p.slot)) {
    // Its peer sends more than it reads (engine_core::should_pause_reading):
    // no reads until its queue drains (on_write, or the housekeeper, resumes).
    c.paused = true;
    watch(c.p.slot);
    return next_read::none;
  }
  // Even after a full read: a zero-byte read, so that nothing holds slices
  // while the peer is quiet (see the top of this file).
  return next_read::ready;
}

bool engine_impl::try_resume(connection& c) {
  if (!core_.may_resume_reading(c.p.slot)) return false;
  c.paused = false;
  if (!c.p.reading) read_loop(c, next_read::ready);
  return true;
}

void engine_impl::on_eof(connection& c) {
  // Under Wine a reset that arrives with the last bytes reads as EOF (its
  // Linux socket reports POLLHUP, and the error is consumed before we can
  // ask). A zero-byte send tells them apart: it succeeds on a connection
  // the peer only shut down, and fails on one it reset. On Windows the read
  // itself fails with WSAECONNRESET and the probe always succeeds. Not
  // after shutdown_send(): a send on a socket shut for sending fails
  // (WSAESHUTDOWN) whatever the peer did, so under Wine a reset that comes
  // then reads as the peer's EOF.
  if (c.p.state == phase::open && !c.p.fin_first) {
    WSABUF none = buf_of(nullptr, 0);
    DWORD sent = 0;
    if (WSASend(c.s, &none, 1, &sent, 0, nullptr, nullptr) != 0) {
      begin_close(c, close_reason_of(static_cast<DWORD>(WSAGetLastError())),
                  false);
      return;
    }
  }
  if (detail::on_peer_eof(core_, c.p)) {
    begin_close(c, make_error_code(errc::peer_closed), true);
  }
  maybe_finish(c);
}

void engine_impl::on_read(engine_impl& e, operation& op,
                          const completion& done) {
  connection& c = e.conns_[op.owner];
  lock(c);
  if (c.p.state == phase::idle || op.generation != c.p.generation) {
    // Cannot happen while slots wait for their last completion; if it
    // did, the operation's buffers are all there is to put back.
    e.stale_completions_.fetch_add(1, std::memory_order_relaxed);
    e.give_read_buffers(op.buffers);
    e.op_finished();
  } else {
    e.read_loop(c, e.read_done(c, done));
  }
  e.core_.deliver(detail::thread_batch());
  unlock(c);
}

// --- writes -------------------------------------------------------------

void engine_impl::flush(connection& c) {
  auto& pool = core_.slices();
  detail::event_batch& out = detail::thread_batch();
  for (;;) {
    auto [chain, close_now, abortive, shut_send] =
        detail::next_send(core_, c.p, gather_max, out);
    if (chain.empty()) {
      // Our FIN (shutdown_send()); a failure shows on the read side.
      if (shut_send) (void)::shutdown(c.s, SD_SEND);
      if (close_now) begin_close(c, close_now, !abortive);
      return;
    }
    operation& op = c.write_op;
    op.prepare(op_kind::write, c.s);
    op.generation = c.p.generation;
    op.buffers = chain;
    WSABUF bufs[gather_max];  // 4 KiB on the stack, as in issue_read
    DWORD nbufs = 0;
    for (std::uint32_t s = chain.head; s != detail::no_slice;
         s = pool.next(s)) {
      bufs[nbufs++] = buf_of(pool.data(s), pool.length(s));
    }
    c.p.writing = true;
    ++c.p.in_flight;
    op_started();
    completion done;
    DWORD sent = 0;
    if (WSASend(c.s, bufs, nbufs, &sent, 0, &op.ov, nullptr) == 0) {
      if (!c.skip_on_success) return;  // the port brings it
      done.error = overlapped_result(c.s, &op.ov, done.bytes);
    } else {
      const int err = WSAGetLastError();
      if (err == WSA_IO_PENDING) return;
      if (is_resource_shortage(err)) {
        // Not started, and not the connection's fault: the slices go back
        // in front of the backlog and the housekeeper flushes again.
        c.p.writing = false;
        --c.p.in_flight;
        op_finished();
        detail::requeue_send(core_, c.p, op.buffers);
        watch(c.p.slot);
        return;
      }
      done.error = static_cast<DWORD>(err);
    }
    if (!write_done(c, done)) return;
  }
}

bool engine_impl::write_done(connection& c, const completion& done) {
  operation& op = c.write_op;
  c.p.writing = false;
  --c.p.in_flight;
  op_finished();
  detail::slice_chain chain = op.buffers;
  op.buffers = detail::slice_chain{};
  // A stream send completes whole or fails; anything short is a failure.
  const bool ok = done.error == 0 && done.bytes == chain.bytes;
  core_.write_done(c.p.slot, chain, ok);
  if (!ok && c.p.state == phase::open) {
    begin_close(c,
                done.error ? close_reason_of(done.error)
                           : make_error_code(errc::connection_reset),
                false);
    return false;
  }
  if (c.p.state != phase::open) {
    maybe_finish(c);
    return false;
  }
  return true;
}

void engine_impl::on_write(engine_impl& e, operation& op,
                           const completion& done) {
  connection& c = e.conns_[op.owner];
  lock(c);
  if (c.p.state == phase::idle || op.generation != c.p.generation) {
    e.stale_completions_.fetch_add(1, std::memory_order_relaxed);
    e.core_.write_done(op.owner, op.buffers, false);
    op.buffers = detail::slice_chain{};
    e.op_finished();
  } else if (e.write_done(c, done)) {
    e.flush(c);
    if (c.paused && c.p.state == phase::open)
      e.try_resume(c);  // its peer reads again
  }
  e.core_.deliver(detail::thread_batch());
  unlock(c);
}

void engine_impl::on_posted(engine_impl& e, operation&,
                            const completion& done) {
  // A hand-off from send()/close()/release(): the key is the connection id,
  // which may have gone stale while the packet was queued.
  const auto id = static_cast<connection_id>(done.key);
  if (auto slot = e.core_.resolve(id)) {
    connection& c = e.conns_[*slot];
    lock(c);
    if (c.p.active() && c.p.generation == detail::generation_of(id)) {
      // Connecting: only a close(reset) does anything (next_send).
      e.flush(c);
    } else if (c.p.state == phase::idle && e.core_.resolve(id)) {
      // A connect not begun yet (the id is live, under the lock, and the
      // connection is not open): its begin packet is still on its way,
      // and start_connect() looks at what was asked meanwhile. (Resolved
      // again: the id may have closed while this waited for the lock.)
    } else {
      e.stale_completions_.fetch_add(1, std::memory_order_relaxed);
    }
    e.core_.deliver(detail::thread_batch());
    unlock(c);
  } else {
    e.stale_completions_.fetch_add(1, std::memory_order_relaxed);
  }
  e.op_finished();
}

// --- close --------------------------------------------------------------

void engine_impl::begin_close(connection& c, std::error_code reason,
                              bool graceful) {
  if (!detail::start_close(core_, c.p, reason, graceful,
                           detail::thread_batch()))
    return;
  if (detail::should_linger(c.p)) {
    // Our FIN goes out after every byte already sent; the peer's FIN (or
    // the deadline) ends the wait. Closing before it could make the kernel
    // reset the connection and destroy replies the peer has not read.
    if (::shutdown(c.s, SD_SEND) == 0) {
      detail::linger(c.p, GetTickCount64());
      watch(c.p.slot);
      if (!c.p.reading && !c.starved) read_loop(c, next_read::ready);
      return;
    }
    c.p.abortive = true;
  }
  if (c.p.in_flight > 0) CancelIoEx(reinterpret_cast<HANDLE>(c.s), nullptr);
  maybe_finish(c);
}

void engine_impl::maybe_finish(connection& c) {
  if (!c.p.finished()) return;
  c.p.state = phase::idle;
  c.starved = false;
  if (!c.entry) {
    close_outbound(c);
    core_.backend_done(c.p.slot);
    return;
  }
  socket_entry& entry = *c.entry;
  c.entry = nullptr;
  c.s = INVALID_SOCKET;
  if (detail::may_reuse_socket(c.p) && !gate_.stopping()) {
    // The peer closed first: no TIME_WAIT here. Once the engine stops no
    // DisconnectEx is started: it may wait for the network, after
    // close_all() cut short those in flight.
    disconnect(entry);
  } else if (c.p.abortive) {
    abort_socket(
        entry);  // the peer does not wait on a connection we gave up on
  } else {
    // Our FIN went first: the socket holds TIME_WAIT, which a closed
    // socket spends in the system, not in our pool. The entry gets a new one.
    give_back(entry, false);
  }
  core_.backend_done(c.p.slot);
}

void engine_impl::housekeep_connection(connection& c, std::uint64_t now) {
  if (c.begin_pending) {
    start_connect(c, c.connect_id);
    op_finished();  // the begin packet the port did not take
    return;
  }
  if (c.p.state == phase::open) {
    flush(c);  // a hand-off the port could not take
  } else if (detail::linger_expired(c.p, now)) {
    // The peer never sent its FIN: give up on it.
    if (c.p.in_flight > 0) CancelIoEx(reinterpret_cast<HANDLE>(c.s), nullptr);
    maybe_finish(c);
    return;
  }
  if (c.paused && c.p.live() && !try_resume(c)) {
    watch(c.p.slot);  // look again next round
    return;
  }
  if (c.p.live() && c.starved && !c.p.reading) {
    c.starved = false;
    read_loop(c, next_read::data);
  }
  if (c.p.state == phase::lingering) watch(c.p.slot);
}

// --- outbound connections (engine::connect()) -----------------------------
//
// A worker begins each: a fresh socket, bound to the wildcard address (as
// ConnectEx requires), associated with the port, then ConnectEx. The
// begin packet travels on the connection's connect_op, which then carries
// the ConnectEx; either is counted in ops_ until processed, the ConnectEx
// also in the connection's in_flight, so a close (close(reset), the
// connect deadline, stop()) cancels it and the slot waits for its
// completion. The socket is closed when the connection ends: never put
// in the accept pool, and never recycled through DisconnectEx.

void engine_impl::begin_connect(connection_id id, const endpoint& to) {
  const std::uint32_t slot = detail::slot_of(id);
  connection& c = conns_[slot];
  lock(c);
  // The slot is free (idle): the operations of its last connection have
  // all completed. A hand-off for the new id that comes first finds it
  // idle and leaves it (on_posted).
  c.connect_to = to;
  c.connect_id = id;
  c.connect_op.prepare(op_kind::begin_connect, INVALID_SOCKET);
  c.connect_op.generation = detail::generation_of(id);
  op_started();
  if (!cport_.post(static_cast<ULONG_PTR>(id), &c.connect_op.ov)) {
    // The port could not queue it (out of memory): the housekeeper begins
    // it, still counted in ops_ so that stop() waits for it.
    c.begin_pending = true;
    watch(slot);
    SetEvent(housekeeper_wake_);
  }
  unlock(c);
}

void engine_impl::start_connect(connection& c, connection_id id) {
  c.begin_pending = false;
  c.p.open_connecting(detail::generation_of(id));
  c.entry = nullptr;
  c.s = INVALID_SOCKET;
  c.skip_on_success = false;
  c.starved = false;
  c.paused = false;
  // Closed before it began: stop(), or close(reset) (a graceful close
  // waits for the connect, then sends what was queued).
  if (gate_.stopping()) {
    begin_close(c, make_error_code(errc::engine_stopped), false);
    return;
  }
  if (core_.reset_requested(c.p.slot)) {
    begin_close(c, make_error_code(errc::closed_by_user), false);
    return;
  }
  const int family = c.connect_to.v6 ? AF_INET6 : AF_INET;
  c.s = open_tcp_socket(family);
  if (c.s == INVALID_SOCKET) {
    begin_close(c, connect_reason_of(static_cast<DWORD>(WSAGetLastError())),
                false);
    return;
  }
  if (auto ec = cport_.add(c.s)) {
    begin_close(c, ec, false);
    return;
  }
  c.skip_on_success =
      skip_mode_safe_ && SetFileCompletionNotificationModes(
                             reinterpret_cast<HANDLE>(c.s),
                             FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                 FILE_SKIP_SET_EVENT_ON_HANDLE) != FALSE;
  if (const int err = bind_any(c.s, family)) {
    begin_close(c, connect_reason_of(static_cast<DWORD>(err)), false);
    return;
  }
  const int len = to_sockaddr(c.connect_to, c.connect_addr);
  operation& op = c.connect_op;
  op.prepare(op_kind::connect, c.s);
  op.generation = c.p.generation;
  ++c.p.in_flight;
  op_started();
  connects_in_flight_.fetch_add(1, std::memory_order_relaxed);
  completion done;
  DWORD sent = 0;
  if (ext_.connect_ex(c.s, reinterpret_cast<const sockaddr*>(&c.connect_addr),
                      len, nullptr, 0, &sent, &op.ov)) {
    if (!c.skip_on_success) return;  // the port brings it
    done.error = overlapped_result(c.s, &op.ov, done.bytes);
  } else {
    const int err = WSAGetLastError();
    if (err == ERROR_IO_PENDING) return;
    done.error = static_cast<DWORD>(err);  // never started: finish it here
  }
  connect_done(c, done);
}

void engine_impl::connect_done(connection& c, const completion& done) {
  --c.p.in_flight;
  op_finished();
  connects_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  if (c.p.state != phase::connecting) {
    maybe_finish(c);  // closed meanwhile (its ConnectEx was cancelled)
    return;
  }
  if (done.error) {
    begin_close(c, connect_reason_of(done.error), false);
    return;
  }
  // ConnectEx remarks: until SO_UPDATE_CONNECT_CONTEXT, the socket does
  // not have its connected state for getpeername, getsockname, shutdown
  // and the socket options.
  if (setsockopt(c.s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) != 0) {
    begin_close(c, close_reason_of(static_cast<DWORD>(WSAGetLastError())),
                false);
    return;
  }
  BOOL nodelay = TRUE;
  setsockopt(c.s, IPPROTO_TCP, TCP_NODELAY,
             reinterpret_cast<const char*>(&nodelay), sizeof nodelay);
  set_keepalive(c.s, core_.opts());
  const endpoint peer = iocp::address_of(c.s, false).value_or(c.connect_to);
  detail::connect_done(core_, c.p, peer, detail::thread_batch());
  read_loop(c, next_read::ready);
  flush(c);  // what was sent while it connected
}

void engine_impl::close_outbound(connection& c) {
  if (c.s == INVALID_SOCKET) return;
  if (c.p.abortive) {
    // SO_LINGER {on, 0 s}: closesocket resets the connection at once.
    linger l{1, 0};
    setsockopt(c.s, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l),
               sizeof l);
  }
  // A graceful end leaves TIME_WAIT (our FIN went first) to the system.
  closesocket(c.s);
  c.s = INVALID_SOCKET;
}

void engine_impl::on_connect(engine_impl& e, operation& op,
                             const completion& done) {
  connection& c = e.conns_[op.owner];
  lock(c);
  if (op.kind == op_kind::begin_connect) {
    e.op_finished();
    e.start_connect(c, static_cast<connection_id>(done.key));
  } else if (c.p.state == phase::idle || op.generation != c.p.generation) {
    // Cannot happen while slots wait for their last completion.
    e.stale_completions_.fetch_add(1, std::memory_order_relaxed);
    e.connects_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    e.op_finished();
  } else {
    e.connect_done(c, done);
  }
  e.core_.deliver(detail::thread_batch());
  unlock(c);
}

}  // namespace ionet::iocp
