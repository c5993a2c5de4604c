// What every backend shares above the OS: per-connection bookkeeping (ids,
// user context, send queue of slices, decoder), option checks and the
// counters behind stats(). Three concerns are members with headers of their
// own: delivery (events to the user and back), backpressure (the queued
// bytes cap, when reading pauses) and timeouts (the coarse clock, expiry).
// A backend owns the sockets and threads and calls in here; it never
// touches another backend's code. No OS headers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "common/backpressure.hpp"
#include "common/conn_state.hpp"
#include "common/connection_table.hpp"
#include "common/counters.hpp"
#include "common/delivery.hpp"
#include "common/framing.hpp"
#include "common/slab_pool.hpp"
#include "common/slot_array.hpp"
#include "common/spin_lock.hpp"
#include "common/tasks.hpp"
#include "common/timeouts.hpp"
#include "ionet/engine.hpp"

namespace ionet::detail {

// Checks every option; the status names the first bad one and says why.
status validate(const options& opts, endpoint* bound = nullptr);
// Parses an IPv4 or IPv6 literal (no names, no zone ids).
bool parse_address(const std::string& host, endpoint& out);

class engine_core {
 public:
  engine_core(engine& self, const options& opts);
  ~engine_core();

  // Validates options and makes every pool; every counter starts from
  // zero (a restart after stop() too). options::backend_default threads
  // become `default_threads`, the backend's own choice, so opts().threads
  // is the number of engine threads from here on. On failure nothing is
  // kept. A restart keeps the pools and the slot table (generations go
  // on) and lets go of the events nobody polled.
  status init(std::uint32_t default_threads);
  // The options, threads resolved by init(); the handler is delivery's.
  const options& opts() const noexcept { return opts_; }
  bool inline_mode() const noexcept { return delivery_.inline_mode(); }

  // --- slots (engine threads) ---
  // A new connection's slot, or nullopt at max_connections (counted).
  std::optional<connection_id> open_slot(std::uint32_t owner);
  // An outbound connection's slot (engine::connect(), any thread): what
  // open_slot() does, on an engine thread chosen in turn, with `context`
  // set and a deadline `timeout` from now (0: none). It is connecting:
  // sends queue, and nothing flushes until connect_done(). Errors:
  // connection_limit, not_running (a shutdown() is under way).
  struct outbound {
    connection_id id{};
    std::error_code ec;
  };
  // On the thread that serves `beside` while it names an open connection.
  outbound open_outbound(void* context, std::chrono::milliseconds timeout,
                         connection_id beside = {});
  // The engine thread that serves `id` (bound), or else the next one in
  // turn, for what has no connection yet: a connect(), a post(fn). Any
  // thread.
  std::uint32_t thread_for(connection_id id, bool bound) noexcept {
    return bound ? states_[slot_of(id)].owner.load(std::memory_order_relaxed)
                 : next_owner_.fetch_add(1, std::memory_order_relaxed) %
                       opts_.threads;
  }
  // The outbound connection opened (its thread): emits connected with
  // `peer`; the backend flushes next (what was sent meanwhile goes out).
  void connect_done(std::uint32_t slot, const endpoint& peer, event_batch& out);
  // Takes back a slot open_slot() gave that the backend did not open after
  // all (the engine began to stop meanwhile): no event named it, so it is
  // freed at once and not counted as accepted.
  void cancel_open(std::uint32_t slot) noexcept;
  conn_state& state(std::uint32_t slot) noexcept { return states_[slot]; }
  // Slots [0, slots_made()) have had a connection; a slot beyond has no
  // state yet (a backend that sweeps every slot stops there).
  std::uint32_t slots_made() const noexcept { return states_.made(); }
  connection_id id_of(std::uint32_t slot) const noexcept {
    return table_->id_of(slot);
  }
  std::optional<std::uint32_t> resolve(connection_id id) const noexcept {
    return table_->resolve(id);
  }
  // The connection is gone: no more sends, its id is dead, queued bytes are
  // dropped (counted), and `closed` is emitted with `reason`. Returns once
  // no direct write is in its socket (one on another thread is waited
  // for), so the backend may close the socket next. The backend still
  // holds the slot until it calls backend_done().
  void close_slot(std::uint32_t slot, std::error_code reason, event_batch& out);
  // The backend has finished with the slot (socket closed, no operation in
  // flight).
  void backend_done(std::uint32_t slot) noexcept;

  // --- a graceful stop (engine::shutdown) ---
  // From here until the next init(), open_slot() refuses every connection
  // (counted as rejected), and a graceful close ends with engine_stopped.
  void begin_drain() noexcept {
    draining_.store(true, std::memory_order_relaxed);
  }
  // Requests a graceful close of every open connection; wake(id) for each
  // the backend must hand to its thread (request_close's `wake`). Any
  // thread; connections already closing are left as they are.
  template <class Wake>
  void close_all_gracefully(Wake&& wake) {
    for (std::uint32_t slot = 0; slot < states_.made(); ++slot) {
      const connection_id id = table_->id_of(slot);
      if (!table_->resolve(id)) continue;
      const queued_result r = request_close(id, close_mode::graceful);
      if (!r.ec && r.wake) wake(id);
    }
  }
  // Connections whose backend has not finished with them (open, closing,
  // lingering for the peer's end). Any thread.
  std::uint32_t connections_live() const noexcept {
    return live_.load(std::memory_order_acquire);
  }

  // --- send side ---
  // What send() and request_close() did. `wake`: the backend must hand the
  // connection to its owner thread, to flush or close it (its queue went
  // from idle to busy).
  struct queued_result {
    std::error_code ec;
    bool wake = false;
  };
  // A backend that can write on the spot, from any thread: fn(backend,
  // slot, head, body) writes what the socket takes at once, straight from
  // these buffers, and returns how many bytes it wrote (0 when it cannot:
  // no room, or an error the connection's thread will meet). The slot is
  // open and claimed meanwhile, and close_slot() waits for it.
  struct direct_write {
    std::size_t (*fn)(void* backend, std::uint32_t slot,
                      std::span<const std::byte> head,
                      std::span<const std::byte> body);
    void* backend;
  };
  // Any thread. With `now`, a frame of up to 16 slices that finds nothing
  // queued or being written goes out through it, and only what the socket
  // did not take is queued (into slices taken first: once part of a frame
  // is out, the rest must be able to follow).
  queued_result send(connection_id id, std::span<const std::byte> bytes,
                     const direct_write* now = nullptr);
  queued_result request_close(connection_id id, close_mode mode);
  // engine::shutdown_send(): refuses further sends; the backend is handed
  // the connection to shut its sending side once the queue is out
  // (take_queue's shut_send).
  queued_result request_shutdown_send(connection_id id);
  std::error_code set_context(connection_id id, void* context);
  // engine::queued_bytes(): nullopt for a stale id.
  std::optional<std::uint64_t> queued_bytes(connection_id id) const;
  // fn(slot) while `id` names a live connection, under its slot's lock
  // (any thread), or nullopt. A backend closes a connection's socket only
  // after close_slot() has retired its id under this lock, so what fn
  // reads of the slot's socket is this connection's.
  template <class Fn>
  auto while_live(connection_id id, Fn&& fn) const
      -> std::optional<decltype(fn(std::uint32_t{}))> {
    const auto slot = table_ ? table_->resolve(id) : std::nullopt;
    if (!slot) return std::nullopt;
    const conn_state& st = states_[*slot];
    std::lock_guard g(st.lock);
    if (!table_->resolve(id)) return std::nullopt;
    return fn(*slot);
  }
  // What take_queue() found: the bytes to write, and when there were none,
  // whether the connection should now close gracefully.
  struct taken {
    slice_chain chain;
    std::error_code close_now;
    bool abortive = false;  // close_now: with a reset (close_mode::reset)
    // shutdown_send() was called and nothing is left to write: shut the
    // socket's sending side now (before closing, if close_now says so).
    bool shut_send = false;
  };
  // Owner thread, with no write in flight on the slot: takes what is
  // queued. When nothing is, the slot goes idle (the next send() wakes the
  // backend again) and `close_now` says whether the connection should now
  // close gracefully: closed_by_user when close() was requested,
  // peer_closed when the peer sent EOF and the user has released every
  // message of the connection.
  taken take_queue(std::uint32_t slot);
  // Whether close(reset) was called on the slot's connection (a cheap look,
  // owner thread): it closes abortively at once, even with a write in
  // flight.
  bool reset_requested(std::uint32_t slot) const noexcept {
    return states_[slot].reset_requested.load(std::memory_order_relaxed);
  }
  // The peer sent EOF (owner thread). Returns true when the connection can
  // close at once (nothing to write, nothing unreleased); otherwise the
  // backend is handed the connection when it can (release_one()).
  bool on_peer_eof(std::uint32_t slot);
  // Owner thread: a write of `chain` finished (sent or not); gives slices
  // back and counts. `sent` is false when the write failed.
  void write_done(std::uint32_t slot, slice_chain& chain, bool sent) noexcept;

  // --- writability ---
  // Owner thread, wherever its queue may have drained (next_send does it
  // on every flush) and in a periodic sweep while writable_waiting(): a
  // connection owed a writable event (send() refused it) gets it once its
  // queued bytes are at most send_low_water and the engine's under 3/4
  // of their cap. The sweep covers what no flush of its own would see: the
  // engine-wide cap or the pool refused a connection with little queued,
  // and other connections' queues drained.
  void check_writable(std::uint32_t slot, event_batch& out) {
    if (states_[slot].want_writable.load(std::memory_order_relaxed))
      emit_writable(slot, out);
  }
  // Whether any connection is owed a writable event (a cheap look).
  bool writable_waiting() const noexcept {
    return writable_waiting_.load(std::memory_order_relaxed) != 0;
  }
  // Whether this one is (a cheap look, for a sweep over every slot).
  bool writable_owed(std::uint32_t slot) const noexcept {
    return states_[slot].want_writable.load(std::memory_order_relaxed);
  }

  // --- receive side (owner thread) ---
  // Decodes bytes read on `slot`; emits message events. Returns an error
  // (message_too_large, out_of_memory) when the connection must close.
  std::error_code on_read(std::uint32_t slot, std::span<const std::byte> bytes,
                          event_batch& out);
  void emit_connected(std::uint32_t slot, const endpoint& peer,
                      event_batch& out);
  // Hands a batch to the user: inline handler, or the pull queue. Never
  // waits for the user: a full queue holds the events back and pauses the
  // connection's reading (should_pause_reading).
  void deliver(event_batch& batch);

  // --- reading under memory pressure (owner thread) ---
  // Whether to stop reading `slot` for now (the backend asks after each
  // read that delivered bytes): the user's poll() is behind, or its peer
  // sends more than it reads (backpressure::should_pause). Counted in
  // read_pauses when true.
  bool should_pause_reading(std::uint32_t slot) noexcept;
  // Whether a paused connection may be read again
  // (backpressure::may_resume). A frame left partial gets a full
  // read_timeout from here.
  bool may_resume_reading(std::uint32_t slot) noexcept;

  // --- user side ---
  std::size_t poll(std::span<event> out, std::chrono::milliseconds timeout) {
    return delivery_.poll(out, timeout);
  }
  // Gives back what one polled event holds. True when its connection now
  // needs its owner thread (the peer's EOF waited for this message to be
  // released, and nothing else has scheduled it): the caller hands it off.
  [[nodiscard]] bool release_one(const event& e) noexcept;
  engine_stats stats() const;
  // Pull model, any thread: queues a task event (for `id`'s connection
  // when bound, behind the events it has queued); once the engine has
  // stopped, the node is destroyed instead.
  void push_task(connection_id id, std::unique_ptr<task_node> node);
  void stop_events() {
    delivery_.stop([this](const event& e) { give_back(e); });
  }
  slab_pool& slices() noexcept { return *slices_; }
  // Counted by backends: connections refused beyond max_connections.
  void count_rejected() noexcept { counters_.add(counter::rejected, 1); }
  // Where an engine thread's counts go (engine_thread claims a block).
  counters& thread_counters() noexcept { return counters_; }

  // --- timeouts ---
  // Backends call tick() from their periodic timer (a few times a second)
  // and, when timeouts_on(), close a connection that expired() names a
  // timeout for (any thread), with it as the reason.
  void tick() noexcept { timeouts_.tick(); }
  std::error_code expired(std::uint32_t slot) const noexcept {
    return timeouts_.expired(states_[slot]);
  }
  bool timeouts_on() const noexcept { return timeouts_.on(); }

 private:
  // send()'s direct write, the slot claimed; `spare` takes what is left.
  queued_result send_now(std::uint32_t slot, std::span<const std::byte> bytes,
                         std::uint64_t total, slice_chain& spare,
                         const direct_write& now);
  void drop_user_hold(std::uint32_t slot) noexcept;
  // One of the slot's two holds (backend, closed event) is gone.
  void release_hold(std::uint32_t slot) noexcept;
  // send() refused a frame that may fit later: the connection is owed a
  // writable event. _locked: with st.lock held and the id checked.
  void owe_writable_locked(conn_state& st) noexcept;
  void owe_writable(std::uint32_t slot, connection_id id) noexcept;
  void emit_writable(std::uint32_t slot, event_batch& out);
  void discard_unpolled() noexcept;
  // open_slot()'s part for both kinds: the state of a slot just taken.
  conn_state& make_open(std::uint32_t slot, std::uint32_t owner);
  void free_slot(std::uint32_t slot) noexcept;
  // What delivery hands back of an event no release() will come for: a
  // closed event after the inline handler, a message dropped once the
  // engine stops, an event nobody polled. None needs waking its
  // connection: it is closed, or the engine is stopping.
  void give_back(const event& e) noexcept { (void)release_one(e); }
  bool message_released(const event& e) noexcept;

  options opts_;
  slot_array<conn_state> states_;  // made as slots first come into use
  std::unique_ptr<connection_table> table_;
  std::unique_ptr<slab_pool> slices_;
  delivery delivery_;

  // Per connection, and read by should_pause_reading: shared.
  std::atomic<std::uint64_t> opened_{0};  // accepted and outbound
  std::atomic<std::uint64_t> closed_{0};
  std::atomic<std::uint32_t> live_{0};        // opened, backend_done() not yet
  std::atomic<bool> draining_{false};         // begin_drain() was called
  std::atomic<std::uint32_t> next_owner_{0};  // next_thread()'s turn
  // Held by init() and stats(): a monitoring thread may ask for stats
  // while another starts the engine, which makes or resets what they read.
  mutable std::mutex stats_lock_;
  // Connections owed a writable event.
  std::atomic<std::uint32_t> writable_waiting_{0};
  std::uint32_t low_water_ = 0;  // options::send_low_water, resolved
  counters counters_;            // the rest, per engine thread
  backpressure pressure_;
  timeouts timeouts_;
};

}  // namespace ionet::detail
