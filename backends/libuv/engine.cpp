// The libuv backend's engine: start, stop, the listener and the hand-off of
// work between threads. Per-connection I/O is in connection.cpp.
#include "backends/libuv/engine.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "backends/posix/sockets.hpp"

namespace ionet::libuv {
namespace {

constexpr std::size_t read_buffer_bytes = std::size_t{64} * 1024;
constexpr std::uint64_t sweep_interval_ms = 250;

void on_listen_readable(uv_poll_t* h, int status, int) {
  if (status < 0) return;
  loop& l = *static_cast<loop*>(h->data);
  l.engine->on_accept(l);
}

// The loop whose thread we are on, if any: lets hand_off() skip the async
// wake-up when the user's inline handler sends.
thread_local loop* current_loop = nullptr;

loop& loop_of(uv_handle_t* h) { return *static_cast<loop*>(h->data); }

}  // namespace

engine_impl::~engine_impl() { stop(); }

status engine_impl::start() {
  std::lock_guard g(stop_lock_);
  if (gate_.running()) return {errc::already_running, "start() called twice"};
  endpoint ep;
  if (status s = detail::validate(core_.opts(), &ep); !s) return s;
  // One loop unless options::threads asks for more (options.hpp).
  if (status s = core_.init(1); !s) return s;
  const std::uint32_t threads = core_.opts().threads;

  port_ = 0;
  if (core_.opts().listen) {
    if (status s = posix::open_listener(ep, core_.opts(), SOCK_NONBLOCK,
                                        listen_fd_, port_);
        !s) {
      return s;
    }
  }

  conns_.reserve(core_.opts().max_connections);  // made as slots are used
  loops_.clear();
  for (std::uint32_t i = 0; i < threads; ++i) {
    auto l = std::make_unique<loop>();
    l->engine = this;
    l->index = i;
    l->attach_lists(conns_);
    l->read_buf.reset(new char[read_buffer_bytes]);
    const int r = uv_loop_init(&l->uv);
    l->uv.data = l.get();  // connection::owner() finds its loop here
    if (r != 0) {
      gate_.begin_stop();
      if (listen_fd_ >= 0) ::close(listen_fd_);
      listen_fd_ = -1;
      for (auto& done : loops_) {
        uv_close(reinterpret_cast<uv_handle_t*>(&done->wake), nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(&done->sweep), nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(&done->timers), nullptr);
        if (done->listen_active)
          uv_close(reinterpret_cast<uv_handle_t*>(&done->listen_poll), nullptr);
        uv_run(&done->uv, UV_RUN_DEFAULT);
        uv_loop_close(&done->uv);
      }
      loops_.clear();
      return {errc::out_of_memory,
              std::string("uv_loop_init: ") + uv_strerror(r)};
    }
    l->wake.data = l.get();
    uv_async_init(&l->uv, &l->wake, [](uv_async_t* h) {
      loop& lp = loop_of(reinterpret_cast<uv_handle_t*>(h));
      lp.engine->on_wake(lp);
    });
    l->timers.data = l.get();
    uv_timer_init(&l->uv, &l->timers);
    l->sweep.data = l.get();
    uv_timer_init(&l->uv, &l->sweep);
    uv_timer_start(
        &l->sweep,
        [](uv_timer_t* h) {
          loop& lp = loop_of(reinterpret_cast<uv_handle_t*>(h));
          lp.engine->on_sweep(lp);
        },
        sweep_interval_ms, sweep_interval_ms);
    if (i == 0 && listen_fd_ >= 0) {
      l->listen_poll.data = l.get();
      uv_poll_init(&l->uv, &l->listen_poll, listen_fd_);
      uv_poll_start(&l->listen_poll, UV_READABLE, on_listen_readable);
      l->listen_active = true;
    }
    loops_.push_back(std::move(l));
  }
  next_loop_ = 0;
  gate_.open();
  for (auto& l : loops_) {
    loop* lp = l.get();
    lp->thread = std::thread([this, lp] {
      const detail::engine_thread mark(this, core_.thread_counters());
      // libuv writes with write(2): to a socket the peer has reset that
      // raises SIGPIPE, whose default action ends the process. Blocked on
      // this thread (it is directed at the writing thread), the write just
      // fails with EPIPE, and the application's own disposition of the
      // signal is left alone.
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
      current_loop = lp;
      uv_run(&lp->uv, UV_RUN_DEFAULT);
      current_loop = nullptr;
    });
  }
  return {};
}

void engine_impl::wake_for_stop() noexcept {
  for (auto& l : loops_) uv_async_send(&l->wake);  // each loop shuts down
}

void engine_impl::stop_locked() noexcept {
  if (!gate_.running()) return;
  if (gate_.begin_stop()) core_.stop_events();
  // Let callers already inside the gate finish before the loops wind down.
  gate_.wait_for_callers();
  wake_for_stop();
  for (auto& l : loops_) {
    if (l->thread.joinable()) l->thread.join();
  }
  for (auto& l : loops_) {
    uv_loop_close(&l->uv);
    for (int fd : l->incoming) ::close(fd);
  }
  loops_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  conns_.reset();
  gate_.stopped();
}

void engine_impl::hand_off(connection_id id) {
  loop& l = *loops_[core_.state(detail::slot_of(id))
                        .owner.load(std::memory_order_relaxed)];
  if (current_loop == &l) {
    l.handoffs.push_local(id);  // served by finish() before the callback ends
  } else if (l.handoffs.push_remote(id)) {
    uv_async_send(&l.wake);
  }
}

std::size_t engine_impl::write_now(void* self, std::uint32_t slot,
                                   std::span<const std::byte> head,
                                   std::span<const std::byte> body) {
  const int fd = static_cast<engine_impl*>(self)->conns_[slot].fd;
  return fd < 0 ? 0 : posix::send_now(fd, head, body);
}

void engine_impl::begin_connect(connection_id id, const endpoint& to) {
  const std::uint32_t slot = detail::slot_of(id);
  conns_.make(slot);  // a hand-off may find it before the connect begins
  // Through the loop's inbox even from its own thread: an inline handler
  // may be calling, in the middle of delivering the loop's batch, and a
  // connect that fails at once adds its closed event to that batch.
  loop& l = *loops_[core_.state(slot).owner.load(std::memory_order_relaxed)];
  bool first;
  {
    std::lock_guard g(l.lock);
    first = l.incoming.empty() && l.connects.empty();
    l.connects.emplace_back(id, to);
    l.has_incoming.store(true, std::memory_order_release);
  }
  if (first) uv_async_send(&l.wake);
}

void engine_impl::on_accept(loop& l) {
  // Bounded per callback so the acceptor loop also serves its connections.
  for (int n = 0; n < 256; ++n) {
    int fd =
        ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const auto next = posix::classify_accept_error(errno);
      if (next == posix::after_accept_error::retry) continue;
      if (next == posix::after_accept_error::pause) {
        // A shortage, or a listener that fails every accept while it stays
        // readable: stop polling (it would spin) and retry from the sweep
        // timer.
        uv_poll_stop(&l.listen_poll);
        l.accept_paused = true;
      }
      break;
    }
    loop& target = *loops_[next_loop_++ % loops_.size()];
    if (&target == &l) {
      open_connection(l, fd);
      continue;
    }
    bool first;
    {
      std::lock_guard g(target.lock);
      first = target.incoming.empty() && target.connects.empty();
      target.incoming.push_back(fd);
      target.has_incoming.store(true, std::memory_order_release);
    }
    if (first) uv_async_send(&target.wake);
  }
  finish(l);
}

void engine_impl::on_wake(loop& l) {
  if (stopping()) {
    shutdown_loop(l);
    return;
  }
  // Most wake-ups bring sends, not sockets: the lock only when there are.
  if (l.has_incoming.exchange(false, std::memory_order_acquire)) {
    {
      std::lock_guard g(l.lock);
      l.incoming_local.swap(l.incoming);
      l.connects_local.swap(l.connects);
    }
    for (int fd : l.incoming_local) open_connection(l, fd);
    l.incoming_local.clear();
    for (const auto& [id, to] : l.connects_local) start_connect(l, id, to);
    l.connects_local.clear();
  }
  l.handoffs.take_remote();
  finish(l);
}

void engine_impl::finish(loop& l) {
  core_.deliver(l.batch);
  // Between handler calls: posted work, then (loop 0) timers that a new
  // earliest deadline asks to arm again.
  l.tasks.run(stopping());
  if (l.index == 0 && timers_.take_changed()) run_timers(l);
  l.handoffs.serve_local(
      [&](connection_id id) {
        auto slot = core_.resolve(id);
        // Idle here: a connect handed to this loop but not begun yet (its
        // handle is not this loop's yet). Its start checks for a
        // close(reset); connect_done's flush sends what is queued.
        if (slot && conns_[*slot].p.state != phase::idle) flush(conns_[*slot]);
      },
      [&] { core_.deliver(l.batch); });
}

void engine_impl::shutdown_loop(loop& l) {
  {
    std::lock_guard g(l.lock);
    for (int fd : l.incoming) ::close(fd);
    l.incoming.clear();
    l.connects_local.swap(l.connects);
  }
  // Connects not begun: each gets its closed event (engine_stopped).
  for (const auto& [id, to] : l.connects_local) start_connect(l, id, to);
  l.connects_local.clear();
  l.handoffs.clear();
  // Handles close later, in callbacks: none leaves the list meanwhile.
  l.members.sweep([&](std::uint32_t slot) {
    connection& c = conns_[slot];
    auto* h = reinterpret_cast<uv_handle_t*>(&c.tcp);
    if (detail::end_abruptly(c.p) == detail::abrupt::close) {
      close_connection(c, make_error_code(errc::engine_stopped), false);
    } else if (!uv_is_closing(h)) {
      // Shutting down or lingering: cut it short.
      uv_close(h, on_closed);
    }
  });
  auto* wake = reinterpret_cast<uv_handle_t*>(&l.wake);
  if (!uv_is_closing(wake)) uv_close(wake, nullptr);
  auto* sweep = reinterpret_cast<uv_handle_t*>(&l.sweep);
  if (!uv_is_closing(sweep)) uv_close(sweep, nullptr);
  auto* timers = reinterpret_cast<uv_handle_t*>(&l.timers);
  if (!uv_is_closing(timers)) uv_close(timers, nullptr);
  if (l.listen_active) {
    uv_close(reinterpret_cast<uv_handle_t*>(&l.listen_poll), nullptr);
    l.listen_active = false;
  }
  finish(l);
}

void engine_impl::post_task(connection_id id, bool bound, task fn) {
  loop& l = *loops_[core_.thread_for(id, bound)];
  // Woken even on its own thread: the loop may be about to sleep.
  if (l.tasks.push(std::move(fn))) uv_async_send(&l.wake);
}

void engine_impl::timers_changed() noexcept {
  // finish() arms them; woken on its own thread too, as a change made
  // after its last look would otherwise wait for the next callback.
  uv_async_send(&loops_[0]->wake);
}

void engine_impl::run_timers(loop& l) {
  const auto next = fire_timers();
  if (next == detail::timer_heap::none) {
    uv_timer_stop(&l.timers);
    return;
  }
  // libuv's clock is the loop's cached millisecond: refreshed first, and
  // rounded up, so the timer does not fire early (fire_timers() would only
  // arm it again).
  uv_update_time(&l.uv);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(
      next - detail::timer_heap::clock::now());
  uv_timer_start(
      &l.timers,
      [](uv_timer_t* h) {
        loop& lp = loop_of(reinterpret_cast<uv_handle_t*>(h));
        lp.engine->run_timers(lp);
        lp.engine->finish(lp);
      },
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, left.count())), 0);
}

void engine_impl::on_sweep(loop& l) {
  if (l.index == 0) core_.tick();
  if (!l.paused.empty()) resume_reading(l);
  if ((core_.timeouts_on() || core_.writable_waiting()) && !stopping()) {
    l.members.sweep([&](std::uint32_t slot) {
      connection& c = conns_[slot];
      if (!c.p.active()) return;  // open, or connecting
      if (const std::error_code ec = core_.expired(slot)) {
        close_connection(c, ec, detail::graceful_after(ec));
      } else {
        core_.check_writable(slot, l.batch);
      }
    });
    finish(l);
  }
  if (l.accept_paused && !stopping()) {
    l.accept_paused = false;
    uv_poll_start(&l.listen_poll, UV_READABLE, on_listen_readable);
  }
  const std::uint64_t now = uv_now(&l.uv);
  l.lingering.sweep([&](std::uint32_t slot) {
    connection& c = conns_[slot];
    if (!detail::linger_expired(c.p, now)) return;
    // The peer never sent its FIN: give up on it.
    l.lingering.remove(slot);
    auto* h = reinterpret_cast<uv_handle_t*>(&c.tcp);
    if (!uv_is_closing(h)) uv_close(h, on_closed);
  });
}

}  // namespace ionet::libuv

namespace ionet {

std::unique_ptr<engine> make_engine(const options& opts) {
  return std::make_unique<libuv::engine_impl>(opts);
}

}  // namespace ionet
