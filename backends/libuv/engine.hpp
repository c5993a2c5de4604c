// The libuv backend: `threads` loops, each on its own thread. Loop 0 owns
// the listening socket and hands accepted sockets round-robin to every loop
// (including itself) through the loop's async handle. One listening socket
// (rather than a SO_REUSEPORT socket per loop) keeps "address in use"
// meaning what users expect and spreads connections evenly whatever the
// kernel's hash does with few client addresses.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "backends/posix/sockets.hpp"
#include "common/completion.hpp"
#include "common/engine_base.hpp"
#include "common/handoffs.hpp"
#include "common/slot_list.hpp"

namespace ionet::libuv {

using detail::phase;

class engine_impl;
struct loop;

// A write that waits for the socket, a shutdown or a connect under way. A
// connection needs one only then, so requests come from its loop's spares (made
// as needed, kept for reuse) instead of living in every connection: an idle
// connection is its handle and a few fields.
union request_op {
  uv_write_t write;
  uv_shutdown_t shutdown;
  uv_connect_t connect;
};
struct request {
  request_op op{};            // first: libuv's callbacks get its address
  detail::slice_chain chain;  // a write's slices, its own until on_write
};

// One per connection slot, made when the slot is first used and reused.
// Its phase says where it is in the close protocol (common/completion.hpp):
// idle until open_connection(), open while served, draining once closed
// for the user (a shutdown or the handle's close under way), lingering
// while our FIN is out and the peer's awaited; idle again when the handle's
// close callback has run.
struct connection {
  uv_tcp_t tcp{};
  detail::conn_protocol p;
  // Its socket, for direct writes from any thread (write_now): set once
  // the handle has it, before anyone can know the id, and left alone until
  // the core has closed the slot (close_slot waits for direct writes).
  int fd = -1;
  // Its places in its loop's lists (loop::members, paused, lingering).
  detail::list_place member, paused, lingering;
  // The loop that serves it (the one its handle was made on).
  loop& owner() const noexcept { return *static_cast<loop*>(tcp.loop->data); }
};

struct loop : detail::loop_lists<connection> {
  uv_loop_t uv{};
  uv_async_t wake{};
  uv_timer_t sweep{};        // linger deadlines, accept retry
  uv_timer_t timers{};       // loop 0: the earliest of engine::after()/every()
  detail::task_inbox tasks;  // engine::post(), inline model
  engine_impl* engine = nullptr;
  std::uint32_t index = 0;
  std::thread thread;
  std::thread::id thread_id;

  detail::handoffs handoffs;  // connections with something to send
  std::mutex lock;            // guards incoming and connects
  std::vector<int> incoming;  // accepted sockets for this loop
  // Outbound connections to begin on this loop (engine::connect()).
  std::vector<std::pair<connection_id, endpoint>> connects;
  std::atomic<bool> has_incoming{false};  // set with each push to either
  std::vector<int> incoming_local;
  std::vector<std::pair<connection_id, endpoint>> connects_local;

  std::vector<uv_buf_t> bufs;        // scratch for gathering a write
  detail::event_batch batch;         // events of the current callback
  std::unique_ptr<char[]> read_buf;  // shared by every read on this loop
  std::vector<std::unique_ptr<request>> spare_requests;

  // Loop 0 only: the listening socket.
  uv_poll_t listen_poll{};
  bool listen_active = false;
  bool accept_paused = false;
};

class engine_impl final : public detail::engine_base<engine_impl> {
 public:
  explicit engine_impl(const options& opts) : engine_base(opts) {}
  ~engine_impl() override;

  status start() override;
  std::uint16_t port() const noexcept override { return port_; }
  engine_stats stats() const override { return core_.stats(); }
  const char* backend_name() const noexcept override { return "libuv"; }

  // Used by the loop callbacks (connection.cpp).
  detail::engine_core& core() noexcept { return core_; }
  connection& conn(std::uint32_t slot) noexcept { return conns_[slot]; }
  bool stopping() const noexcept { return gate_.stopping(); }
  // Flush or close `id` on its loop (any thread; see engine_base).
  void hand_off(connection_id id);
  // engine_core::direct_write: with nothing queued or being written, what
  // the socket takes now (any thread: a plain sendmsg, which libuv's own
  // writes cannot interleave with, as the core has claimed the slot).
  static std::size_t write_now(void* self, std::uint32_t slot,
                               std::span<const std::byte> head,
                               std::span<const std::byte> body);
  // engine_base::address(): the slot's socket is live meanwhile.
  std::optional<endpoint> address_of(std::uint32_t slot, bool local) const {
    return posix::address_of(conns_[slot].fd, local);
  }
  void on_accept(loop& l);
  void on_wake(loop& l);
  void open_connection(loop& l, int fd);
  // engine_base: begins `id`'s connect on its loop (any thread).
  void begin_connect(connection_id id, const endpoint& to);
  // On the loop: the socket, then uv_tcp_connect (or the closed event).
  void start_connect(loop& l, connection_id id, const endpoint& to);
  // The connect finished: connected and reading, or closed with why not.
  void on_connected(connection& c, int status);
  void flush(connection& c);
  // Reads a paused connection again once its queue and the engine's have
  // room; resume_reading() tries every paused connection of the loop.
  void try_resume(connection& c);
  void resume_reading(loop& l);
  void close_connection(connection& c, std::error_code reason, bool graceful);
  void on_sweep(loop& l);
  // Loop 0: runs the timers due and arms `timers` for the next.
  void run_timers(loop& l);
  // Ends every loop callback: hands the gathered events to the user, then
  // serves flushes that the user's inline handler scheduled meanwhile.
  void finish(loop& l);
  void on_handle_closed(connection& c);
  // Every connection handle's close callback: on_handle_closed().
  static void on_closed(uv_handle_t* h);
  // A request for `c` from its loop's spares (null when none can be
  // made), and back when its callback has run.
  static request* take_request(connection& c) noexcept;
  static void give_request(connection& c, request* r) noexcept;

 private:
  friend class detail::engine_base<engine_impl>;
  void wake_for_stop() noexcept;
  void stop_locked() noexcept;
  void shutdown_loop(loop& l);
  void post_task(connection_id id, bool bound, task fn);
  void timers_changed() noexcept;

  detail::slot_array<connection> conns_;  // made as slots come into use
  std::vector<std::unique_ptr<loop>> loops_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::uint32_t next_loop_ = 0;
};

}  // namespace ionet::libuv
