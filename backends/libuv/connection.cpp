// The libuv backend's per-connection I/O: reads decoded by common/, sliced
// gathered writes, and the close protocol (flush, shutdown, linger, close).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "backends/libuv/engine.hpp"
#include "backends/posix/sockets.hpp"

namespace ionet::libuv {
namespace {

connection& conn_of(uv_handle_t* h) {
  return *static_cast<connection*>(h->data);
}

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  // Reads are decoded (and copied where they must outlive the read) before
  // the callback returns, so one buffer per loop serves every connection:
  // an idle connection holds no read buffer.
  loop& l = conn_of(h).owner();
  *buf = uv_buf_init(l.read_buf.get(), 64 * 1024);
}

// libuv reports EOF when epoll says POLLHUP after a short read, which is
// also what a reset that arrived with the last bytes looks like. The
// socket's pending error tells the two apart (nothing has consumed it yet).
bool reset_pending(uv_stream_t* s) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(s), &fd) != 0) return false;
  int err = 0;
  socklen_t len = sizeof err;
  return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0;
}

// A failed libuv call's close reason: a reset for what the peer or the
// network did, the native error otherwise (libuv's codes are negative
// errnos on Unix).
std::error_code reason_of(int uv_status) {
  if (uv_status == UV_ENOMEM) return make_error_code(errc::out_of_memory);
  // An EOF read where the socket holds a reset (reset_pending).
  if (uv_status == UV_EOF) return make_error_code(errc::connection_reset);
  return posix::close_reason_of(-uv_status);
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  connection& c = conn_of(reinterpret_cast<uv_handle_t*>(s));
  loop& l = c.owner();
  engine_impl& e = *l.engine;
  if (c.p.state == phase::lingering) {
    // Shut down on our side: discard until the peer's EOF, then close.
    // Closing earlier with unread bytes would make the kernel send a reset
    // that can destroy our last replies before the peer reads them.
    if (nread < 0) {
      if (nread == UV_EOF) {
        detail::on_peer_eof(e.core(), c.p);  // now draining
      } else {
        detail::end_abruptly(c.p);
      }
      l.lingering.remove(c.p.slot);
      uv_close(reinterpret_cast<uv_handle_t*>(s), engine_impl::on_closed);
    }
    return;
  }
  if (nread > 0) {
    auto bytes =
        std::as_bytes(std::span(buf->base, static_cast<std::size_t>(nread)));
    if (auto ec = e.core().on_read(c.p.slot, bytes, l.batch)) {
      e.close_connection(c, ec, false);
    }
  } else if (nread == UV_EOF && !reset_pending(s)) {
    uv_read_stop(s);
    if (detail::on_peer_eof(e.core(), c.p)) {
      e.close_connection(c, make_error_code(errc::peer_closed), true);
    }
  } else if (nread < 0 && detail::end_abruptly(c.p) == detail::abrupt::close) {
    e.close_connection(c, reason_of(static_cast<int>(nread)), false);
  }
  e.finish(l);
  if (nread > 0 && c.p.state == phase::open &&
      e.core().should_pause_reading(c.p.slot)) {
    // Its peer sends more than it reads (engine_core::should_pause_reading):
    // no reads until its queue drains (on_write, or on_sweep, resumes).
    uv_read_stop(s);
    l.paused.add(c.p.slot);
  }
}

void on_write(uv_write_t* req, int status) {
  connection& c = *static_cast<connection*>(req->data);
  auto* r = reinterpret_cast<request*>(req);
  loop& l = c.owner();
  engine_impl& e = *l.engine;
  detail::slice_chain done = r->chain;
  r->chain = detail::slice_chain{};
  engine_impl::give_request(c, r);
  c.p.writing = false;
  e.core().write_done(c.p.slot, done, status == 0);
  if (status < 0) {
    if (detail::end_abruptly(c.p) == detail::abrupt::close)
      e.close_connection(c, reason_of(status), false);
  } else {
    e.flush(c);
    e.try_resume(c);  // its peer read what we sent: read it again
  }
  e.finish(l);
}

void on_shutdown(uv_shutdown_t* req, int status) {
  connection& c = *static_cast<connection*>(req->data);
  engine_impl::give_request(c, reinterpret_cast<request*>(req));
  auto* h = reinterpret_cast<uv_handle_t*>(&c.tcp);
  if (uv_is_closing(h)) return;  // stop() cut it short
  loop& l = c.owner();
  if (status == 0 && detail::should_linger(c.p) && !l.engine->stopping()) {
    // Our FIN is out: wait for the peer's (on_read) or the deadline
    // (on_sweep).
    detail::linger(c.p, uv_now(&l.uv));
    l.lingering.add(c.p.slot);
    if (uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp), on_alloc,
                      on_read) == 0) {
      return;
    }
    l.lingering.remove(c.p.slot);
    detail::end_abruptly(c.p);
  }
  uv_close(h, engine_impl::on_closed);
}

void on_connect(uv_connect_t* req, int status) {
  connection& c = *static_cast<connection*>(req->data);
  engine_impl::give_request(c, reinterpret_cast<request*>(req));
  c.owner().engine->on_connected(c, status);
}

}  // namespace

void engine_impl::start_connect(loop& l, connection_id id, const endpoint& to) {
  const std::uint32_t slot = detail::slot_of(id);
  connection& c = conns_[slot];  // made by begin_connect()
  c.p.slot = slot;
  c.p.open_connecting(detail::generation_of(id));
  c.tcp.data = &c;
  l.members.add(slot);
  uv_tcp_init(&l.uv, &c.tcp);
  // Closed before it began: stop(), or close(reset) (a graceful close
  // waits for the connect, then sends what was queued).
  if (stopping()) {
    close_connection(c, make_error_code(errc::engine_stopped), false);
    return;
  }
  if (core_.reset_requested(slot)) {
    close_connection(c, make_error_code(errc::closed_by_user), false);
    return;
  }
  int err = 0;
  const int fd = posix::open_outbound(to, core_.opts(), err);
  if (fd < 0) {
    close_connection(c, posix::close_reason_of(err), false);
    return;
  }
  if (const int r = uv_tcp_open(&c.tcp, fd); r != 0) {
    ::close(fd);
    close_connection(c, reason_of(r), false);
    return;
  }
  sockaddr_storage ss{};
  posix::sockaddr_of(to, ss);  // uv_tcp_connect reads its family
  request* req = take_request(c);
  const int r =
      req ? uv_tcp_connect(&req->op.connect, &c.tcp,
                           reinterpret_cast<const sockaddr*>(&ss), on_connect)
          : UV_ENOMEM;
  if (r != 0) {
    if (req) give_request(c, req);
    close_connection(c, posix::connect_reason_of(-r), false);
  }
}

void engine_impl::on_connected(connection& c, int status) {
  // Cancelled: the handle was closed meanwhile (close(reset), a timeout,
  // stop()), and the connection with it.
  if (status == UV_ECANCELED || c.p.state != phase::connecting) return;
  loop& l = c.owner();
  if (status < 0) {
    close_connection(c, posix::connect_reason_of(-status), false);
    finish(l);
    return;
  }
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&c.tcp), &fd);
  detail::connect_done(core_, c.p, posix::peer_of(fd), l.batch);
  c.fd = fd;
  if (const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp),
                                  on_alloc, on_read);
      r != 0) {
    close_connection(c, reason_of(r), false);
  } else {
    flush(c);  // what was sent while it connected
  }
  finish(l);
}

void engine_impl::open_connection(loop& l, int fd) {
  auto id = core_.open_slot(l.index);
  if (!id) {
    posix::refuse(fd);  // max_connections reached; counted by open_slot
    return;
  }
  const std::uint32_t slot = detail::slot_of(*id);
  connection& c = conns_.make(slot);
  c.p.slot = slot;
  c.p.open(detail::generation_of(*id));
  c.tcp.data = &c;
  l.members.add(slot);
  uv_tcp_init(&l.uv, &c.tcp);
  core_.emit_connected(slot, posix::peer_of(fd), l.batch);
  if (const int r = uv_tcp_open(&c.tcp, fd); r != 0) {
    ::close(fd);
    close_connection(c, reason_of(r), false);
    return;
  }
  c.fd = fd;
  posix::tune_accepted(fd, core_.opts());
  if (const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp),
                                  on_alloc, on_read);
      r != 0) {
    close_connection(c, reason_of(r), false);
  }
}

void engine_impl::flush(connection& c) {
  loop& l = c.owner();
  auto& pool = core_.slices();
  auto* stream = reinterpret_cast<uv_stream_t*>(&c.tcp);
  for (;;) {
    // What is queued, in one write (or nothing: not open, or a write in
    // flight).
    auto [chain, close_now, abortive, shut_send] =
        detail::next_send(core_, c.p, detail::gather_max, l.batch);
    if (chain.empty()) {
      // Our FIN (shutdown_send()); a failure shows on the read side.
      if (shut_send) (void)::shutdown(c.fd, SHUT_WR);
      if (close_now) close_connection(c, close_now, !abortive);
      return;
    }
    // One write gathers every queued slice. Tried at once first: when the
    // socket takes it all (the usual case) there is no request to queue
    // and no callback to wait for.
    l.bufs.clear();
    for (std::uint32_t s = chain.head; s != detail::no_slice;
         s = pool.next(s)) {
      l.bufs.push_back(
          uv_buf_init(reinterpret_cast<char*>(pool.data(s)), pool.length(s)));
    }
    const int tried = uv_try_write(stream, l.bufs.data(),
                                   static_cast<unsigned>(l.bufs.size()));
    if (tried == static_cast<int>(chain.bytes)) {
      core_.write_done(c.p.slot, chain, true);
      continue;  // more may have been queued meanwhile
    }
    if (tried < 0 && tried != UV_EAGAIN) {
      core_.write_done(c.p.slot, chain, false);
      close_connection(c, reason_of(tried), false);
      return;
    }
    // The socket took part (or none): libuv writes the rest when it can.
    std::size_t skip = tried > 0 ? static_cast<std::size_t>(tried) : 0;
    std::size_t first = 0;
    while (skip >= l.bufs[first].len) skip -= l.bufs[first++].len;
    l.bufs[first].base += skip;
    l.bufs[first].len -= static_cast<unsigned>(skip);
    request* req = take_request(c);
    const int r =
        req ? uv_write(&req->op.write, stream, l.bufs.data() + first,
                       static_cast<unsigned>(l.bufs.size() - first), on_write)
            : UV_ENOMEM;
    if (r != 0) {
      if (req) give_request(c, req);
      core_.write_done(c.p.slot, chain, false);
      close_connection(c, reason_of(r), false);
      return;
    }
    req->chain = chain;
    c.p.writing = true;
    return;
  }
}

void engine_impl::resume_reading(loop& l) {
  l.paused.sweep([&](std::uint32_t slot) { try_resume(conns_[slot]); });
  finish(l);
}

void engine_impl::try_resume(connection& c) {
  loop& l = c.owner();
  if (!l.paused.contains(c.p.slot) || c.p.state != phase::open ||
      !core_.may_resume_reading(c.p.slot)) {
    return;
  }
  l.paused.remove(c.p.slot);
  if (const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp),
                                  on_alloc, on_read);
      r != 0) {
    close_connection(c, reason_of(r), false);
  }
}

void engine_impl::close_connection(connection& c, std::error_code reason,
                                   bool graceful) {
  loop& l = c.owner();
  if (!detail::start_close(core_, c.p, reason, graceful, l.batch)) return;
  c.fd = -1;  // no direct write is under way (close_slot waited for them)
  auto* h = reinterpret_cast<uv_handle_t*>(&c.tcp);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c.tcp));
  if (graceful) {
    request* req = take_request(c);
    if (req &&
        uv_shutdown(&req->op.shutdown, reinterpret_cast<uv_stream_t*>(&c.tcp),
                    on_shutdown) == 0) {
      return;
    }
    if (req) give_request(c, req);  // and close without the shutdown
  } else if (!uv_is_closing(h) && uv_tcp_close_reset(&c.tcp, on_closed) == 0) {
    // Abortive, as on the other backends: SO_LINGER {on, 0 s}, then close;
    // the peer sees a reset, not a graceful end.
    return;
  }
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

void engine_impl::on_closed(uv_handle_t* h) {
  connection& c = conn_of(h);
  c.owner().engine->on_handle_closed(c);
}

void engine_impl::on_handle_closed(connection& c) {
  loop& l = c.owner();
  l.leave_lists(c.p.slot);
  c.p.state = phase::idle;
  core_.backend_done(c.p.slot);
}

request* engine_impl::take_request(connection& c) noexcept {
  auto& spares = c.owner().spare_requests;
  request* r = nullptr;
  if (spares.empty()) {
    r = new (std::nothrow) request{};
  } else {
    r = spares.back().release();
    spares.pop_back();
  }
  if (r) r->op.write.data = &c;  // the same place in either member
  return r;
}

void engine_impl::give_request(connection& c, request* r) noexcept {
  auto& spares = c.owner().spare_requests;
  try {
    spares.emplace_back(r);
  } catch (const std::bad_alloc&) {
    delete r;  // no room to keep it
  }
}

}  // namespace ionet::libuv
