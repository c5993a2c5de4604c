// The io_uring backend's per-connection I/O, on the connection's loop
// thread: receives, sliced gathered sends and the close protocol. It
// mirrors backends/iocp/connection.cpp: the same phases, the same count of
// operations in flight, the same rule that a slot is recycled only when
// that count is zero.
//
// Receives: a multishot recv from the loop's provided-buffer ring (one SQE
// serves many completions; an idle connection holds no buffer); without
// multishot, a single recv re-armed after each completion; without buffer
// rings, a readiness poll and a plain recv() into the loop's buffer.
// Outbound connections: an IORING_OP_CONNECT on a socket of their own,
// counted in flight like any operation, so a close (a reset, the deadline,
// stop()) cancels it and waits for its completion as for a receive.
// Sends: the core's queue of slices goes out in sendmsgs of up to
// `gather_max` slices. While the socket has room they are plain calls that
// finish at once (IOCP's skip-on-success); otherwise an io_uring sendmsg,
// one in flight per connection, and a slice goes back to the pool only when
// the send that carried it has completed.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "backends/posix/sockets.hpp"
#include "backends/uring/engine.hpp"

namespace ionet::uring {
namespace {

using detail::gather_max;
// Inline sendmsg calls per flush before the next send goes as an operation
// (whose completion flushes again): a connection whose queue refills as
// fast as it drains cannot hold its loop.
constexpr int inline_rounds = 4;

// A failed operation's close reason, from its negative errno.
std::error_code reason_of(int negative_errno) {
  return posix::close_reason_of(-negative_errno);
}

}  // namespace

bool engine_impl::current(const loop& l, const connection& c,
                          const op& o) noexcept {
  if (c.p.state != phase::idle && c.loop == l.index &&
      o.generation == c.p.generation) {
    return true;
  }
  // Cannot happen while slots wait for their last completion; counted
  // (and otherwise ignored) if it ever did.
  stale_completions_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void engine_impl::open_connection(loop& l, connection& c, int fd,
                                  connection_id id) {
  c.p.open(detail::generation_of(id));
  c.fd = fd;
  c.loop = l.index;
  l.members.add(c.p.slot);
  c.head_offset = 0;
  c.cancelling = false;
  c.recv_cut = false;
  c.send_inline = features_.inline_send;
  c.sending = detail::slice_chain{};
  posix::tune_accepted(fd, core_.opts());
  core_.emit_connected(c.p.slot, posix::peer_of(fd), l.batch);
  arm_recv(l, c);
}

// --- outbound connections ------------------------------------------------

void engine_impl::start_connect(loop& l, connection_id id, const endpoint& to) {
  const std::uint32_t slot = detail::slot_of(id);
  connection& c = conns_[slot];  // made by begin_connect()
  c.p.open_connecting(detail::generation_of(id));
  c.loop = l.index;
  l.members.add(slot);
  c.head_offset = 0;
  c.cancelling = false;
  c.recv_cut = false;
  c.send_inline = features_.inline_send;
  c.sending = detail::slice_chain{};
  c.connect = no_connect;
  // Closed before it began: stop(), or close(reset) (a graceful close
  // waits for the connect, then sends what was queued).
  std::error_code why;
  if (gate_.stopping()) {
    why = make_error_code(errc::engine_stopped);
  } else if (core_.reset_requested(slot)) {
    why = make_error_code(errc::closed_by_user);
  } else {
    int err = 0;
    const int fd = posix::open_outbound(to, core_.opts(), err);
    if (fd < 0) {
      why = posix::close_reason_of(err);
    } else {
      // The id is live already: address_of() reads the descriptor under
      // the slot's lock from other threads.
      std::lock_guard g(core_.state(slot).lock);
      c.fd = fd;
    }
  }
  if (why) {
    begin_close(l, c, why, false);
    return;
  }
  std::uint32_t index;
  if (l.free_connects.empty()) {
    index = static_cast<std::uint32_t>(l.connect_records.size());
    l.connect_records.emplace_back();
    l.connect_records.back().complete = &engine_impl::on_connect;
  } else {
    index = l.free_connects.back();
    l.free_connects.pop_back();
  }
  pending_connect& rec = l.connect_records[index];
  rec.owner = slot;
  rec.generation = c.p.generation;
  rec.index = index;
  sockaddr_storage ss{};
  const socklen_t len = posix::sockaddr_of(to, ss);
  static_assert(sizeof rec.to == sizeof(sockaddr_in6));
  std::memcpy(&rec.to, &ss, std::min<std::size_t>(len, sizeof rec.to));
  io_uring_sqe* s = l.r.sqe();
  io_uring_prep_connect(s, c.fd, reinterpret_cast<const sockaddr*>(&rec.to),
                        len);
  io_uring_sqe_set_data(s, static_cast<op*>(&rec));
  c.connect = index;
  ++c.p.in_flight;
  ++l.ops;
}

void engine_impl::on_connect(loop& l, op& o, const io_uring_cqe& cqe) {
  engine_impl& e = *l.engine;
  connection& c = e.conns_[o.owner];
  --l.ops;
  l.free_connects.push_back(static_cast<pending_connect&>(o).index);
  if (!e.current(l, c, o)) return;
  c.connect = no_connect;
  --c.p.in_flight;
  e.connect_finished(l, c, cqe.res);
  e.maybe_finish(l, c);
}

void engine_impl::connect_finished(loop& l, connection& c, int res) {
  // Closed meanwhile (close(reset), the deadline, stop()): cancelled, or
  // done too late to matter.
  if (c.p.state != phase::connecting) return;
  if (res < 0) {
    begin_close(l, c, posix::connect_reason_of(-res), false);
    return;
  }
  detail::connect_done(core_, c.p, posix::peer_of(c.fd), l.batch);
  arm_recv(l, c);
  flush(l, c);  // what was sent while it connected, and a close asked for
}

// --- receives -----------------------------------------------------------

void engine_impl::arm_recv(loop& l, connection& c) {
  io_uring_sqe* s = l.r.sqe();
  if (features_.multishot_recv) {
    io_uring_prep_recv_multishot(s, c.fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = static_cast<std::uint16_t>(l.r.buffer_group());
  } else if (features_.buffer_ring) {
    io_uring_prep_recv(s, c.fd, nullptr, l.r.buffer_size(), 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = static_cast<std::uint16_t>(l.r.buffer_group());
  } else {
    io_uring_prep_poll_add(s, c.fd, POLLIN);
  }
  c.recv_op.generation = c.p.generation;
  io_uring_sqe_set_data(s, &c.recv_op);
  c.p.reading = true;
  ++c.p.in_flight;
  ++l.ops;
}

void engine_impl::on_recv(loop& l, op& o, const io_uring_cqe& cqe) {
  engine_impl& e = *l.engine;
  connection& c = e.conns_[o.owner];
  const bool has_buffer = cqe.flags & IORING_CQE_F_BUFFER;
  const std::uint32_t bid = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
  bool cut = false;  // the last completion of a receive we cancelled
  if (!(cqe.flags & IORING_CQE_F_MORE)) {
    --l.ops;
    if (!e.current(l, c, o)) {
      if (has_buffer) l.r.give_buffer(bid);
      return;
    }
    c.p.reading = false;
    --c.p.in_flight;
    cut = c.recv_cut;
    c.recv_cut = false;
  }
  const int res = cqe.res;
  if (res > 0 && !e.features_.buffer_ring) {
    e.read_ready(l, c);  // the poll path: readable, read it ourselves
  } else if (res > 0) {
    if (c.p.state == phase::open) {
      e.on_bytes(l, c, l.r.buffer(bid), static_cast<std::size_t>(res));
    }
    // Lingering: discarded; we only wait for the peer's EOF.
    l.r.give_buffer(bid);
  } else if (res == 0) {
    if (has_buffer) l.r.give_buffer(bid);
    e.on_eof(l, c);
  } else if (res == -ENOBUFS || (res == -ECANCELED && cut)) {
    // ENOBUFS: every receive buffer was in use when data came; nothing is
    // lost, it waits in the socket and is read once the receive is re-armed
    // below. ECANCELED: pause_reading() cut the multishot receive short
    // (and reading may have resumed since: then it is re-armed below).
  } else {
    e.on_error(l, c, res);
  }
  if (res > 0 && !l.paused.contains(c.p.slot) && c.p.state == phase::open &&
      e.core_.should_pause_reading(c.p.slot)) {
    e.pause_reading(l, c);
  }
  if (c.p.live() && !c.p.reading && !c.p.eof && !l.paused.contains(c.p.slot))
    e.arm_recv(l, c);
  e.maybe_finish(l, c);
}

void engine_impl::pause_reading(loop& l, connection& c) {
  l.paused.add(c.p.slot);
  // A multishot receive stays armed: cancel it (its last completion comes
  // with -ECANCELED). A single receive is simply not re-armed.
  if (c.p.reading && features_.multishot_recv) {
    c.recv_cut = true;
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_cancel(s, &c.recv_op, 0);
    io_uring_sqe_set_data(s, &l.ignore_op);
    ++l.ops;
  }
}

void engine_impl::resume_reading(loop& l) {
  l.paused.sweep([&](std::uint32_t slot) { try_resume(l, conns_[slot]); });
}

void engine_impl::try_resume(loop& l, connection& c) {
  if (!l.paused.contains(c.p.slot) || !core_.may_resume_reading(c.p.slot))
    return;
  l.paused.remove(c.p.slot);
  if (c.p.live() && !c.p.reading && !c.p.eof) arm_recv(l, c);
}

void engine_impl::on_bytes(loop& l, connection& c, const std::byte* data,
                           std::size_t n) {
  const std::error_code ec = core_.on_read(c.p.slot, {data, n}, l.batch);
  // Inline handlers see views into the receive buffer: deliver before it
  // goes back to the ring. (The pull model copied; finish() delivers.)
  if (core_.inline_mode()) core_.deliver(l.batch);
  if (ec) begin_close(l, c, ec, false);
}

void engine_impl::read_ready(loop& l, connection& c) {
  // The poll fallback: read what is there into the loop's buffer.
  for (int round = 0; round < 16 && c.p.live(); ++round) {
    const ssize_t n = ::recv(c.fd, l.poll_buf.get(), recv_buffer_bytes, 0);
    if (n > 0) {
      if (c.p.state == phase::open) {
        on_bytes(l, c, reinterpret_cast<const std::byte*>(l.poll_buf.get()),
                 static_cast<std::size_t>(n));
      }
      continue;
    }
    if (n == 0) {
      on_eof(l, c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      on_error(l, c, -errno);
    }
    return;
  }
}

void engine_impl::on_error(loop& l, connection& c, int negative_errno) {
  if (detail::end_abruptly(c.p) == detail::abrupt::close)
    begin_close(l, c, reason_of(negative_errno), false);
}

void engine_impl::on_eof(loop& l, connection& c) {
  if (detail::on_peer_eof(core_, c.p)) {
    begin_close(l, c, make_error_code(errc::peer_closed), true);
  }
}

// --- sends --------------------------------------------------------------

std::size_t engine_impl::write_now(void* self, std::uint32_t slot,
                                   std::span<const std::byte> head,
                                   std::span<const std::byte> body) {
  auto& e = *static_cast<engine_impl*>(self);
  const int fd = e.conns_[slot].fd;
  if (!e.features_.inline_send || fd < 0) return 0;
  return posix::send_now(fd, head, body);
}

void engine_impl::flush(loop& l, connection& c) {
  auto& pool = core_.slices();
  for (int round = 0;; ++round) {
    auto [chain, close_now, abortive, shut_send] =
        detail::next_send(core_, c.p, gather_max, l.batch);
    if (chain.empty()) {
      // Our FIN (shutdown_send()); a failure shows on the read side.
      if (shut_send) (void)::shutdown(c.fd, SHUT_WR);
      if (close_now) begin_close(l, c, close_now, !abortive);
      return;
    }
    if (l.iovecs_used + chain.count > l.iovecs.size() ||
        l.headers_used == l.headers.size()) {
      // The scratch is full: hand the kernel what it references first.
      io_uring_submit(l.r.get());
      l.iovecs_used = l.headers_used = 0;
    }
    iovec* iov = &l.iovecs[l.iovecs_used];
    std::size_t n = 0;
    for (std::uint32_t s = chain.head; s != detail::no_slice;
         s = pool.next(s)) {
      const std::uint32_t skip = n == 0 ? c.head_offset : 0;
      iov[n].iov_base = pool.data(s) + skip;
      iov[n].iov_len = pool.length(s) - skip;
      ++n;
    }
    msghdr& h = l.headers[l.headers_used];
    h = msghdr{};
    h.msg_iov = iov;
    h.msg_iovlen = n;
    if (c.send_inline && round < inline_rounds) {
      // While the socket has room, a plain sendmsg finishes at once: no
      // operation, no completion to wait for (IOCP's skip-on-success).
      const ssize_t r = ::sendmsg(c.fd, &h, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        const int err = errno;
        core_.write_done(c.p.slot, chain, false);
        begin_close(l, c, reason_of(-err), false);
        return;
      }
      // The socket is full: the rest goes as an operation, and inline
      // sends wait until one has completed whole.
      if (!sent_part(c, chain, r < 0 ? 0 : static_cast<std::uint64_t>(r))) {
        c.send_inline = false;
      }
      continue;
    }
    l.iovecs_used += n;
    ++l.headers_used;
    io_uring_sqe* s = l.r.sqe();
    // MSG_WAITALL: the kernel retries a short send itself; a short count is
    // still handled in send_done.
    io_uring_prep_sendmsg(s, c.fd, &h, MSG_NOSIGNAL | MSG_WAITALL);
    c.send_op.generation = c.p.generation;
    io_uring_sqe_set_data(s, &c.send_op);
    c.sending = chain;
    c.p.writing = true;
    ++c.p.in_flight;
    ++l.ops;
    return;
  }
}

bool engine_impl::sent_part(connection& c, detail::slice_chain& chain,
                            std::uint64_t bytes) {
  // Slices wholly sent go back; a slice sent in part goes to the front of
  // the backlog with its offset.
  auto& pool = core_.slices();
  std::uint64_t sent = bytes + c.head_offset;
  std::uint32_t whole = 0;
  for (std::uint32_t s = chain.head;
       s != detail::no_slice && sent >= pool.length(s); s = pool.next(s)) {
    sent -= pool.length(s);
    ++whole;
  }
  detail::slice_chain done = pool.split_front(chain, whole);
  core_.write_done(c.p.slot, done, true);
  if (chain.empty()) {
    c.head_offset = 0;
    return true;
  }
  c.head_offset = static_cast<std::uint32_t>(sent);
  pool.append(chain, c.p.backlog);
  c.p.backlog = chain;
  return false;
}

void engine_impl::on_send(loop& l, op& o, const io_uring_cqe& cqe) {
  engine_impl& e = *l.engine;
  connection& c = e.conns_[o.owner];
  --l.ops;
  if (!e.current(l, c, o)) return;
  e.send_done(l, c, cqe.res);
  if (c.p.state == phase::open) e.try_resume(l, c);  // its peer reads again
}

void engine_impl::send_done(loop& l, connection& c, int res) {
  c.p.writing = false;
  --c.p.in_flight;
  detail::slice_chain chain = c.sending;
  c.sending = detail::slice_chain{};
  if (res < 0) {
    core_.write_done(c.p.slot, chain, false);
    if (c.p.state == phase::open) begin_close(l, c, reason_of(res), false);
    maybe_finish(l, c);
    return;
  }
  if (c.p.state != phase::open) {
    // Cut short by a close (a cancelled send reports what it had sent):
    // the rest will never go.
    sent_part(c, chain, static_cast<std::uint64_t>(res));
    core_.write_done(c.p.slot, c.p.backlog, false);
    c.p.backlog = detail::slice_chain{};
    c.head_offset = 0;
    maybe_finish(l, c);
    return;
  }
  // Sent whole: the socket has room again for inline sends.
  if (sent_part(c, chain, static_cast<std::uint64_t>(res)))
    c.send_inline = features_.inline_send;
  flush(l, c);
}

// --- close --------------------------------------------------------------

void engine_impl::begin_close(loop& l, connection& c, std::error_code reason,
                              bool graceful) {
  if (!detail::start_close(core_, c.p, reason, graceful, l.batch)) return;
  c.head_offset = 0;
  if (detail::should_linger(c.p)) {
    // Our FIN goes out after every byte already sent; the peer's FIN (or
    // the deadline) ends the wait. Closing before it could make the kernel
    // reset the connection and destroy replies the peer has not read.
    if (::shutdown(c.fd, SHUT_WR) == 0) {
      detail::linger(c.p, now_ms());
      l.lingering.add(c.p.slot);
      if (!c.p.reading) arm_recv(l, c);
      return;
    }
    c.p.abortive = true;
  }
  cancel_ops(l, c);
  maybe_finish(l, c);
}

void engine_impl::cancel_ops(loop& l, connection& c) {
  if (c.cancelling ||
      (!c.p.reading && !c.p.writing && c.connect == no_connect)) {
    return;
  }
  if (features_.cancel_fd) {
    // One cancel for every operation on the descriptor. Counted against
    // the connection, so the descriptor is not closed (and its number not
    // reused) before the cancel has run.
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_cancel_fd(s, c.fd, IORING_ASYNC_CANCEL_ALL);
    c.ctl_op.generation = c.p.generation;
    io_uring_sqe_set_data(s, &c.ctl_op);
    c.cancelling = true;
    ++c.p.in_flight;
    ++l.ops;
    return;
  }
  for (op* o : {&c.recv_op, &c.send_op}) {
    if ((o == &c.recv_op && !c.p.reading) || (o == &c.send_op && !c.p.writing))
      continue;
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_cancel(s, o, 0);
    io_uring_sqe_set_data(s, &l.ignore_op);
    ++l.ops;
  }
  if (c.connect != no_connect) {
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_cancel(s, static_cast<op*>(&l.connect_records[c.connect]), 0);
    io_uring_sqe_set_data(s, &l.ignore_op);
    ++l.ops;
  }
}

void engine_impl::on_ctl(loop& l, op& o, const io_uring_cqe&) {
  engine_impl& e = *l.engine;
  connection& c = e.conns_[o.owner];
  --l.ops;
  if (!e.current(l, c, o)) return;
  c.cancelling = false;
  --c.p.in_flight;
  e.maybe_finish(l, c);
}

void engine_impl::maybe_finish(loop& l, connection& c) {
  if (!c.p.finished()) return;
  // Swap-remove from the loop's lists: once idle, the slot may be taken
  // by another loop's thread, so this loop must not look at it again.
  l.leave_lists(c.p.slot);
  if (c.fd >= 0) {  // none when a connect closed before it began
    if (c.p.abortive) {
      // A reset, so the peer does not wait on a connection we gave up on.
      linger lg{1, 0};
      ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    ::close(c.fd);
    c.fd = -1;
  }
  c.p.state = phase::idle;
  core_.backend_done(c.p.slot);
}

void engine_impl::sweep_connections(loop& l) {
  // A close may finish a connection at once: it leaves the list.
  l.members.sweep([&](std::uint32_t slot) {
    connection& c = conns_[slot];
    if (!c.p.active()) return;  // open, or connecting (its deadline)
    if (const std::error_code ec = core_.expired(c.p.slot)) {
      begin_close(l, c, ec, detail::graceful_after(ec));
    } else {
      core_.check_writable(c.p.slot, l.batch);
    }
  });
}

void engine_impl::check_lingering(loop& l, std::uint64_t now) {
  // A finished connection leaves the list.
  l.lingering.sweep([&](std::uint32_t slot) {
    connection& c = conns_[slot];
    if (c.p.state == phase::lingering && detail::linger_expired(c.p, now)) {
      cancel_ops(l, c);  // the peer never sent its FIN: give up on it
      maybe_finish(l, c);
    }
  });
}

}  // namespace ionet::uring
