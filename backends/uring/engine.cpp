// The io_uring backend's engine: start and stop, the loop each ring's
// thread runs, and the hand-off of work from other threads. Accepting is in
// accept.cpp, per-connection I/O in connection.cpp.
#include "backends/uring/engine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace ionet::uring {
namespace {

constexpr unsigned ring_entries = 4096;
// Provided receive buffers per loop (recv_buffer_bytes each, so one
// completion carries what a busy connection has waiting); pages are
// touched only when used.
constexpr std::uint32_t recv_buffers = 1024;
constexpr std::size_t iovec_capacity = 16384;
constexpr std::size_t header_capacity = 1024;
// How long a loop may sleep before it looks at linger deadlines; the
// timeouts are swept less often (they are seconds long).
constexpr unsigned tick_ms = 50;
constexpr std::uint64_t sweep_ms = 250;

// The loop whose thread this is, if any.
thread_local loop* current_loop = nullptr;

}  // namespace

std::uint64_t now_ms() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

engine_impl::~engine_impl() { stop(); }

status engine_impl::start() {
  std::lock_guard g(stop_lock_);
  if (gate_.running()) return {errc::already_running, "start() called twice"};
  endpoint ep;
  if (status s = detail::validate(core_.opts(), &ep); !s) return s;
  std::string why;
  if (probe_features(features_, why)) return {errc::unsupported, why};
  // NOLINTNEXTLINE(concurrency-mt-unsafe): ionet never calls setenv.
  if (const char* off = std::getenv("IONET_URING_DISABLE")) {
    // Asked for by hand (tests of the plainer paths): say what is in use.
    std::fprintf(stderr, "ionet(uring): IONET_URING_DISABLE=%s: %s\n", off,
                 features_.describe().c_str());
  }
  // One ring unless options::threads asks for more (options.hpp).
  if (status s = core_.init(1); !s) return s;
  stale_completions_.store(
      0, std::memory_order_relaxed);  // a restart counts from zero
  accept_failures_.store(0, std::memory_order_relaxed);
  callers_gone_.store(false, std::memory_order_relaxed);
  const options& o = core_.opts();

  port_ = 0;
  if (o.listen) {  // else it only connects: no listener, no accepts
    if (status s = open_listener(ep); !s) {
      release_resources();
      return s;
    }
  }
  try {
    conns_.reserve(o.max_connections);  // each made as its slot is first used
  } catch (const std::bad_alloc&) {
    release_resources();
    return {errc::out_of_memory, "connection slots for max_connections=" +
                                     std::to_string(o.max_connections)};
  }
  for (std::uint32_t i = 0; i < o.threads; ++i) {
    auto l = std::make_unique<loop>();
    l->engine = this;
    l->index = static_cast<std::uint16_t>(i);
    l->attach_lists(conns_);
    l->wake_op = {&engine_impl::on_wake, 0, 0};
    l->accept_op = {&engine_impl::on_accept, 0, 0};
    l->ignore_op = {&engine_impl::on_ignored, 0, 0};
    std::error_code ec = l->r.init(ring_entries, features_, why);
    if (!ec && features_.buffer_ring) {
      ec = l->r.init_buffers(recv_buffers, recv_buffer_bytes, 0);
      if (ec) why = "registering the receive buffer ring: " + ec.message();
    }
    if (!ec) {
      l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (l->wake_fd < 0) {
        ec = {errno, std::system_category()};
        why = "eventfd: " + ec.message();
      }
    }
    if (ec) {
      loops_.push_back(std::move(l));
      release_resources();
      return {errc::unsupported, why};
    }
    l->iovecs.resize(iovec_capacity);
    l->headers.resize(header_capacity);
    if (!features_.buffer_ring) l->poll_buf.reset(new char[recv_buffer_bytes]);
    loops_.push_back(std::move(l));
  }
  gate_.open();
  for (auto& l : loops_) {
    loop* lp = l.get();
    lp->thread = std::thread([this, lp] { run(*lp); });
  }
  return {};
}

void engine_impl::run(loop& l) {
  const detail::engine_thread mark(this, core_.thread_counters());
  current_loop = &l;
  l.r.enable();
  // The wake-up read and the accepts are armed here, on the ring's own
  // thread (the ring is single-issuer where the kernel allows).
  {
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_read(s, l.wake_fd, &l.wake_value, sizeof l.wake_value, 0);
    io_uring_sqe_set_data(s, &l.wake_op);
    ++l.ops;
  }
  if (listen_fd_ >= 0) arm_accepts(l);
  bool wound_down = false;
  std::uint64_t next_tick = now_ms() + tick_ms;
  std::uint64_t next_sweep = next_tick;
  io_uring* ring = l.r.get();
  // Loop 0 runs the timers: its wait ends at the earliest deadline
  // (rounded up to the millisecond, so never before it) when that comes
  // before the tick.
  auto next_timer = detail::timer_heap::none;
  for (;;) {
    unsigned wait_ms = tick_ms;
    if (next_timer != detail::timer_heap::none) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          next_timer - detail::timer_heap::clock::now());
      wait_ms = static_cast<unsigned>(
          std::clamp<std::int64_t>(left.count(), 0, tick_ms));
    }
    l.r.submit_and_wait(1, wait_ms);
    // Everything prepared so far has been consumed by the kernel.
    l.iovecs_used = l.headers_used = 0;
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
      auto* o = static_cast<op*>(io_uring_cqe_get_data(cqe));
      o->complete(l, *o, *cqe);
      ++seen;
    }
    io_uring_cq_advance(ring, seen);
    l.r.publish_buffers();
    finish(l);
    // Between handler calls: posted work, then (loop 0) the timers due or
    // a new earliest deadline; finish() again for what they sent.
    bool ran = l.tasks.run(gate_.stopping());
    if (l.index == 0 && (timers_.take_changed() ||
                         detail::timer_heap::clock::now() >= next_timer)) {
      next_timer = fire_timers();
      ran = true;
    }
    if (ran) finish(l);
    if (gate_.stopping()) {
      if (!wound_down) {
        wind_down(l);
        wound_down = true;
      }
      // Every connect() has left the gate: begin (and so close) what they
      // handed over since the last look, then nothing more can come.
      if (l.ops == 0 && callers_gone_.load(std::memory_order_acquire)) {
        finish(l);
        if (l.ops == 0) break;
      }
    }
    const std::uint64_t now = now_ms();
    if (now >= next_tick) {
      check_lingering(l, now);
      if (!l.paused.empty() && !wound_down) resume_reading(l);
      if (l.index == 0) core_.tick();
      if ((core_.timeouts_on() || core_.writable_waiting()) &&
          now >= next_sweep && !wound_down) {
        sweep_connections(l);
        next_sweep = now + sweep_ms;
      }
      if (l.accepts_armed == 0 && !wound_down && listen_fd_ >= 0)
        arm_accepts(l);  // after a shortage
      next_tick = now + tick_ms;
      finish(l);
    }
    // For stats(), read from other threads: a plain copy, no atomic RMW.
    l.ops_seen.store(l.ops, std::memory_order_relaxed);
    l.accepts_seen.store(l.accepts_armed, std::memory_order_relaxed);
  }
  current_loop = nullptr;
}

void engine_impl::finish(loop& l) {
  // Connects handed over (an inline handler's too) begin here; one that
  // closes at once has a closed event to deliver, and handlers may send.
  do {
    core_.deliver(l.batch);
    l.handoffs.serve_local(
        [&](connection_id id) {
          auto slot = core_.resolve(id);
          connection* c =
              slot && *slot < conns_.made() ? &conns_[*slot] : nullptr;
          if (c && c->p.active() &&
              c->p.generation == detail::generation_of(id)) {
            flush(l, *c);  // connecting: only a close(reset) acts
          } else if (!c || c->p.state != phase::idle) {
            stale_completions_.fetch_add(1, std::memory_order_relaxed);
          }
          // Live but idle here: a connect not begun yet. Its start checks
          // for a close(reset), and connect_done flushes what is queued.
        },
        [&] { core_.deliver(l.batch); });
  } while (start_connects(l));
}

void engine_impl::begin_connect(connection_id id, const endpoint& to) {
  const std::uint32_t slot = detail::slot_of(id);
  make_connection(slot);  // a hand-off may find it before the connect begins
  loop& l = *loops_[core_.state(slot).owner.load(std::memory_order_relaxed)];
  bool first;
  {
    std::lock_guard g(l.connects_lock);
    first = l.connects.empty();
    l.connects.emplace_back(id, to);
    l.has_connects.store(true, std::memory_order_release);
  }
  // On the loop's own thread (an inline handler), finish() begins it.
  if (first && current_loop != &l) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(l.wake_fd, &one, sizeof one);
  }
}

bool engine_impl::start_connects(loop& l) {
  if (!l.has_connects.load(std::memory_order_acquire)) return false;
  {
    std::lock_guard g(l.connects_lock);
    l.connects_local.swap(l.connects);
    l.has_connects.store(false, std::memory_order_relaxed);
  }
  for (const auto& [id, to] : l.connects_local) start_connect(l, id, to);
  const bool any = !l.connects_local.empty();
  l.connects_local.clear();
  return any;
}

void engine_impl::on_wake(loop& l, op&, const io_uring_cqe& cqe) {
  engine_impl& e = *l.engine;
  --l.ops;
  if (cqe.res != -ECANCELED && !e.gate_.stopping()) {
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_read(s, l.wake_fd, &l.wake_value, sizeof l.wake_value, 0);
    io_uring_sqe_set_data(s, &l.wake_op);
    ++l.ops;
  }
  l.handoffs.take_remote();  // finish() serves them after this batch
}

void engine_impl::on_ignored(loop& l, op&, const io_uring_cqe&) { --l.ops; }

void engine_impl::hand_off(connection_id id) {
  const std::uint32_t owner =
      core_.state(detail::slot_of(id)).owner.load(std::memory_order_relaxed);
  loop& l = *loops_[owner];
  if (current_loop == &l) {
    l.handoffs.push_local(id);  // served by finish() before the loop sleeps
  } else if (l.handoffs.push_remote(id)) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(l.wake_fd, &one, sizeof one);
  }
}

void engine_impl::post_task(connection_id id, bool bound, task fn) {
  loop& l = *loops_[core_.thread_for(id, bound)];
  // Woken even on its own thread: the loop may be about to sleep.
  if (l.tasks.push(std::move(fn))) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(l.wake_fd, &one, sizeof one);
  }
}

void engine_impl::timers_changed() noexcept {
  // Loop 0 looks at the heap again once woken; on its own thread too, as
  // it may be about to wait without looking.
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(loops_[0]->wake_fd, &one, sizeof one);
}

engine_stats engine_impl::stats() const {
  engine_stats s = core_.stats();
  s.stale_completions = stale_completions_.load(std::memory_order_relaxed);
  s.accept_failures = accept_failures_.load(std::memory_order_relaxed);
  // The loops live from start() to stop(): read them only inside the gate,
  // which stop() waits for before it frees them.
  if (gate_.enter()) {
    for (const auto& l : loops_) {
      s.operations_in_flight += l->ops_seen.load(std::memory_order_relaxed);
      s.accepts_pending += l->accepts_seen.load(std::memory_order_relaxed);
    }
    gate_.leave();
  }
  return s;
}

void engine_impl::wind_down(loop& l) {
  // Cancel what this loop keeps armed for itself; its completions are
  // counted like any other, so the loop ends only after they arrive.
  for (op* o : {&l.accept_op, &l.wake_op}) {
    io_uring_sqe* s = l.r.sqe();
    io_uring_prep_cancel(s, o, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(s, &l.ignore_op);
    ++l.ops;
  }
  // Closing may finish a connection at once: it leaves the list.
  l.members.sweep([&](std::uint32_t slot) {
    connection& c = conns_[slot];
    const detail::abrupt next = detail::end_abruptly(c.p);
    if (next == detail::abrupt::close) {
      begin_close(l, c, make_error_code(errc::engine_stopped), false);
    } else if (next == detail::abrupt::stop_waiting) {
      cancel_ops(l, c);
      maybe_finish(l, c);
    }
  });
  finish(l);
}

void engine_impl::wake_for_stop() noexcept {
  for (auto& l : loops_) {  // each loop winds down
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(l->wake_fd, &one, sizeof one);
  }
}

void engine_impl::stop_locked() noexcept {
  if (!gate_.running()) return;
  if (gate_.begin_stop()) core_.stop_events();
  gate_.wait_for_callers();
  callers_gone_.store(true, std::memory_order_release);
  wake_for_stop();
  for (auto& l : loops_) {
    if (l->thread.joinable()) l->thread.join();
  }
  release_resources();
  gate_.stopped();
}

void engine_impl::release_resources() noexcept {
  for (auto& l : loops_) {
    if (l->wake_fd >= 0) ::close(l->wake_fd);
    l->wake_fd = -1;
  }
  loops_.clear();  // each ring is torn down with its loop
  if (conns_.reserved()) {
    for (std::uint32_t i = 0; i < conns_.made(); ++i) {
      connection& c = conns_[i];
      core_.slices().give_chain(c.p.backlog);
      core_.slices().give_chain(c.sending);
      if (c.fd >= 0) ::close(c.fd);
    }
  }
  conns_.reset();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

}  // namespace ionet::uring

namespace ionet {

std::unique_ptr<engine> make_engine(const options& opts) {
  return std::make_unique<uring::engine_impl>(opts);
}

}  // namespace ionet
