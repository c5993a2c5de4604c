// What every backend's engine class has in common above its OS calls: the
// core, the gate that cross-thread calls pass, and the user-facing calls
// that only differ in how a backend is told a connection needs its thread.
// A backend derives from engine_base<itself> and provides
//   void hand_off(connection_id id);
// which schedules a flush or close of `id` on the thread that owns it; it
// is called from any thread, inside the gate, at most once per idle->busy
// change of the connection's queue (engine_core::send's `wake`);
//   void wake_for_stop() noexcept;
// which tells the engine's threads, from one of them, that the stop has
// begun (the gate says stopping): they close every connection;
//   void stop_locked() noexcept;
// the whole stop, on a thread that is not the engine's, with stop_lock_
// held: close everything, wait, join, free;
//   void begin_connect(connection_id id, const endpoint& to);
// which has the thread that owns `id` (engine_core::state().owner) open a
// socket and connect it to `to`, then engine_core::connect_done() or
// close_slot() with why not (any thread, inside the gate; at a stop, a
// connection whose connect is not begun yet closes like any other).
// Every thread a backend starts holds an engine_thread for its lifetime.
// For work and timers (common/tasks.hpp) a backend also provides
//   void post_task(connection_id id, bool bound, task fn);
// inline model: runs fn soon on an engine thread (bound: the one serving
// `id`, in order with its handler calls), unless the engine stops first;
//   void timers_changed() noexcept;
// timers_ has a new earliest deadline: the thread that runs the timers
// (fire_timers()) arms its wait again.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <span>
#include <system_error>
#include <thread>

#include "common/engine_core.hpp"
#include "common/tasks.hpp"
#include "ionet/engine.hpp"

namespace ionet::detail {

// Lets send()/close()/set_context() and wake-ups from any thread in only
// while the engine runs, and lets stop() wait until those already inside
// have left, so none of them touches a loop or port being torn down.
// All seq_cst: a caller's increment and stop()'s flag must not pass each
// other (the caller re-checks the flag after counting itself in).
class call_gate {
 public:
  bool enter() noexcept {
    callers_.fetch_add(1, std::memory_order_seq_cst);
    if (!running_.load(std::memory_order_seq_cst) ||
        stopping_.load(std::memory_order_seq_cst)) {
      leave();
      return false;
    }
    return true;
  }
  void leave() noexcept { callers_.fetch_sub(1, std::memory_order_seq_cst); }

  // start() succeeded: calls may enter.
  void open() noexcept {
    stopping_.store(false, std::memory_order_seq_cst);
    running_.store(true, std::memory_order_seq_cst);
  }
  // stop() begins: no new call enters. True the first time.
  bool begin_stop() noexcept {
    return !stopping_.exchange(true, std::memory_order_seq_cst);
  }
  // Waits for the calls already inside to leave (they are short).
  void wait_for_callers() const noexcept {
    while (callers_.load(std::memory_order_seq_cst) != 0)
      std::this_thread::yield();
  }
  // stop() is done: the engine may be started again.
  void stopped() noexcept { running_.store(false, std::memory_order_seq_cst); }

  bool running() const noexcept {
    return running_.load(std::memory_order_acquire);
  }
  bool stopping() const noexcept {
    return stopping_.load(std::memory_order_acquire);
  }

 private:
  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> callers_{0};
};

// Marks the calling thread as one of `e`'s for the marker's lifetime (an
// IOCP worker or housekeeper, a libuv loop, an io_uring ring): the one rule
// of which thread stop() runs on. The thread counts into a block of `c`'s
// of its own meanwhile.
class engine_thread {
 public:
  engine_thread(const engine* e, counters& c) noexcept
      : previous_(current_), block_(c) {
    current_ = e;
  }
  ~engine_thread() { current_ = previous_; }
  engine_thread(const engine_thread&) = delete;
  engine_thread& operator=(const engine_thread&) = delete;

  // Whether the calling thread is one of e's.
  static bool of(const engine* e) noexcept { return current_ == e; }

 private:
  static inline thread_local const engine* current_ = nullptr;
  const engine* previous_;
  counters::thread_block block_;
};

template <class Backend>
class engine_base : public engine {
 public:
  explicit engine_base(const options& opts) : core_(*this, opts) {}

  // On one of the engine's own threads (an inline handler) stop() cannot
  // wait for those threads, its own among them, and must not take
  // stop_lock_ (a stop() on the user's thread may hold it while it waits
  // for this very thread): it begins the stop and returns. The next stop()
  // from another thread, or the destructor, waits and joins.
  void stop() noexcept final {
    if (engine_thread::of(this)) {
      // The engine runs while any of its threads does (they are joined
      // before running() turns false), so the gate is safe to use here.
      if (gate_.running() && gate_.begin_stop()) {
        core_.stop_events();
        backend().wake_for_stop();
      }
      return;
    }
    std::lock_guard g(stop_lock_);
    backend().stop_locked();
    timers_.clear();  // the threads are joined: nothing fires any more
  }

  void shutdown(std::chrono::milliseconds grace) noexcept final {
    const auto deadline = std::chrono::steady_clock::now() + grace;
    const bool mine = engine_thread::of(this);
    // Connections that arrive meanwhile (an accept already under way) are
    // closed by the next round: each round closes whatever is open.
    for (bool first = true;; first = false) {
      if (!gate_.enter()) return;  // not running, or a stop has begun
      if (first) core_.begin_drain();
      core_.close_all_gracefully(
          [this](connection_id id) { backend().hand_off(id); });
      gate_.leave();
      if (mine) return;  // an engine thread cannot wait for the others
      if (core_.connections_live() == 0 ||
          std::chrono::steady_clock::now() >= deadline) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop();
  }

  connect_result connect(const std::string& host, std::uint16_t port,
                         const connect_options& how) override {
    endpoint to;
    if (port == 0 || !parse_address(host, to))
      return {{}, make_error_code(errc::bad_address)};
    to.port = port;
    if (how.timeout && how.timeout->count() < 0)
      return {{}, make_error_code(errc::bad_option)};
    if (!gate_.enter()) return {{}, make_error_code(errc::not_running)};
    const auto r = core_.open_outbound(
        how.context, how.timeout.value_or(core_.opts().connect_timeout),
        how.beside);
    if (!r.ec) backend().begin_connect(r.id, to);
    gate_.leave();
    return {r.id, r.ec};
  }

  std::size_t poll(std::span<event> out,
                   std::chrono::milliseconds timeout) override {
    return core_.poll(out, timeout);
  }
  // A connection whose peer's EOF waited for these events to be released
  // is handed to its thread, which closes it once its replies are out.
  void release(std::span<const event> events) noexcept override {
    for (const event& e : events) {
      if (core_.release_one(e) && gate_.enter()) {
        backend().hand_off(e.conn);
        gate_.leave();
      }
    }
  }

  std::error_code send(connection_id id,
                       std::span<const std::byte> bytes) override {
    bool mine = false;
    if (!enter_any(mine)) return make_error_code(errc::not_running);
    engine_core::queued_result r;
    if constexpr (requires { &Backend::write_now; }) {
      // A connection with nothing queued or being written is written at
      // once from the caller's buffer, on whatever thread the caller is
      // (an inline handler, or the pull model's user thread): no hand-off
      // to the connection's thread, no copy unless the socket is full.
      const engine_core::direct_write now{&Backend::write_now, &backend()};
      r = core_.send(id, bytes, &now);
    } else {
      r = core_.send(id, bytes);
    }
    if (r.wake) backend().hand_off(id);
    if (!mine) gate_.leave();
    return r.ec;
  }

  std::error_code close(connection_id id, close_mode mode) override {
    if (!gate_.enter()) return make_error_code(errc::not_running);
    const auto r = core_.request_close(id, mode);
    if (r.wake) backend().hand_off(id);
    gate_.leave();
    return r.ec;
  }

  std::error_code shutdown_send(connection_id id) override {
    if (!gate_.enter()) return make_error_code(errc::not_running);
    const auto r = core_.request_shutdown_send(id);
    if (r.wake) backend().hand_off(id);
    gate_.leave();
    return r.ec;
  }

  std::error_code set_context(connection_id id, void* context) override {
    if (!gate_.enter()) return make_error_code(errc::not_running);
    const std::error_code ec = core_.set_context(id, context);
    gate_.leave();
    return ec;
  }

  std::optional<endpoint> peer_address(connection_id id) const override {
    return address(id, false);
  }
  std::optional<endpoint> local_address(connection_id id) const override {
    return address(id, true);
  }

  std::optional<std::uint64_t> queued_bytes(connection_id id) const override {
    // Nothing is torn down under it: the slot table and states live as
    // long as the engine.
    if (!gate_.running()) return std::nullopt;
    return core_.queued_bytes(id);
  }

  // Work and timers (common/tasks.hpp).
  std::error_code post(task fn) override {
    return post_task(connection_id{}, false, std::move(fn));
  }
  std::error_code post(connection_id id, task fn) override {
    return post_task(id, true, std::move(fn));
  }
  timer_result after(std::chrono::milliseconds delay, task fn) override {
    return add_timer(delay, std::chrono::milliseconds(0), std::move(fn));
  }
  timer_result every(std::chrono::milliseconds period, task fn) override {
    if (period.count() < 1) return {{}, make_error_code(errc::bad_option)};
    return add_timer(period, period, std::move(fn));
  }
  bool cancel(timer_id id) noexcept override { return timers_.cancel(id); }

 protected:
  engine_core core_;
  // Mutable: stats() passes it too, to read what only a running engine has
  // (a stop frees it once the callers inside have left).
  mutable call_gate gate_;
  std::mutex stop_lock_;  // start() and the stop on a non-engine thread
  timer_heap timers_;

  // The thread that runs the timers, on its wake-up: runs (inline) or
  // queues (pull) every timer due; returns the next deadline to arm.
  timer_heap::clock::time_point fire_timers() {
    if (gate_.stopping()) return timer_heap::none;
    auto fire = [this](const std::shared_ptr<timer_state>& t) {
      if (core_.inline_mode()) {
        t->run();
        return;
      }
      if (t->period.count() > 0 && t->waiting.exchange(true)) return;
      core_.push_task(connection_id{}, std::make_unique<task_node>(task{}, t));
    };
    return timers_.run_due(timer_heap::clock::now(), fire);
  }

 private:
  Backend& backend() noexcept { return static_cast<Backend&>(*this); }
  // Lets a call in (send, post, timers). On an engine thread (an inline
  // handler) the gate's count is not needed: stop() tears nothing down
  // before it has joined this very thread, so only a begun stop refuses,
  // as the gate would. False: not_running; else leave() unless `mine`.
  bool enter_any(bool& mine) noexcept {
    mine = engine_thread::of(this);
    return mine ? !gate_.stopping() : gate_.enter();
  }
  std::error_code post_task(connection_id id, bool bound, task fn) {
    if (!fn) return make_error_code(errc::bad_option);
    bool mine = false;
    if (!enter_any(mine)) return make_error_code(errc::not_running);
    std::error_code ec;
    if (bound && !core_.resolve(id)) {
      ec = make_error_code(errc::stale_connection);
    } else if (core_.inline_mode()) {
      backend().post_task(id, bound, std::move(fn));
    } else {
      core_.push_task(id, std::make_unique<task_node>(std::move(fn), nullptr));
    }
    if (!mine) gate_.leave();
    return ec;
  }
  timer_result add_timer(std::chrono::milliseconds delay,
                         std::chrono::milliseconds period, task fn) {
    if (!fn) return {{}, make_error_code(errc::bad_option)};
    bool mine = false;
    if (!enter_any(mine)) return {{}, make_error_code(errc::not_running)};
    const timer_heap::added a = timers_.add(delay, period, std::move(fn));
    if (a.earliest) backend().timers_changed();
    if (!mine) gate_.leave();
    return {a.id, {}};
  }
  // The backend asks its OS, `local` or the peer's, while the id is live
  // (engine_core::while_live): Backend::address_of(slot, local).
  std::optional<endpoint> address(connection_id id, bool local) const {
    if (!gate_.running()) return std::nullopt;
    const auto& b = static_cast<const Backend&>(*this);
    auto got = core_.while_live(
        id, [&](std::uint32_t slot) { return b.address_of(slot, local); });
    return got ? *got : std::nullopt;
  }
};

}  // namespace ionet::detail
