// Accepting on io_uring: the IOCP backend's accept pool, the kernel's way.
// Each loop keeps accepts posted on the shared listening socket before
// clients arrive: one multishot accept where the kernel has it (Linux
// 5.19; it stays armed across connections), otherwise `accept_depth`
// single accepts, each re-posted as it completes. A shortage of
// descriptors or memory, or a listener that fails every accept (shut down,
// refused by a security module), pauses accepting until the next tick
// instead of spinning on the error (posix::classify_accept_error, the
// libuv backend's rule too); that tick arms one accept, and the others
// follow once it succeeds.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "backends/posix/sockets.hpp"
#include "backends/uring/engine.hpp"

namespace ionet::uring {

status engine_impl::open_listener(const endpoint& ep) {
  return posix::open_listener(ep, core_.opts(), 0, listen_fd_, port_);
}

void engine_impl::arm_accepts(loop& l) {
  // Non-blocking sockets: the poll fallback reads until EAGAIN, and
  // io_uring itself handles either kind.
  constexpr int flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
  const std::uint32_t want = features_.multishot_accept || l.accept_probing
                                 ? 1
                                 : core_.opts().accept_depth;
  while (l.accepts_armed < want) {
    io_uring_sqe* s = l.r.sqe();
    if (features_.multishot_accept) {
      io_uring_prep_multishot_accept(s, listen_fd_, nullptr, nullptr, flags);
    } else {
      io_uring_prep_accept(s, listen_fd_, nullptr, nullptr, flags);
    }
    io_uring_sqe_set_data(s, &l.accept_op);
    ++l.accepts_armed;
    ++l.ops;
  }
}

void engine_impl::on_accept(loop& l, op&, const io_uring_cqe& cqe) {
  engine_impl& e = *l.engine;
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (!more) {
    --l.accepts_armed;
    --l.ops;
  }
  const bool stopping = e.gate_.stopping();
  if (cqe.res >= 0) {
    l.accept_probing = false;  // the re-arm below arms them all again
    e.accepted(l, cqe.res);
  } else if (cqe.res != -ECANCELED) {
    // A client that reset before we took it, a shortage, or a listener
    // that fails every accept.
    e.accept_failures_.fetch_add(1, std::memory_order_relaxed);
    if (posix::classify_accept_error(-cqe.res) ==
        posix::after_accept_error::pause) {
      l.accept_probing = true;
      return;  // the next tick re-arms, once every accept has ended
    }
  }
  if (!more && !stopping && cqe.res != -ECANCELED) e.arm_accepts(l);
}

void engine_impl::accepted(loop& l, int fd) {
  if (gate_.stopping()) {
    ::close(fd);
    return;
  }
  auto id = core_.open_slot(l.index);
  if (!id) {
    posix::refuse(fd);  // max_connections are open (counted by open_slot)
    return;
  }
  open_connection(l, make_connection(detail::slot_of(*id)), fd, *id);
}

connection& engine_impl::make_connection(std::uint32_t slot) {
  return conns_.make(slot, [](connection& m, std::uint32_t i) {
    // What a slot's connection is for its lifetime.
    m.p.slot = i;
    m.recv_op = {&engine_impl::on_recv, i, 0};
    m.send_op = {&engine_impl::on_send, i, 0};
    m.ctl_op = {&engine_impl::on_ctl, i, 0};
  });
}

}  // namespace ionet::uring
