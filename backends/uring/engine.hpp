// The io_uring backend: the IOCP backend's design on Linux's completion
// engine. `threads` loops, each with its own ring and thread; every loop
// keeps an accept posted on the one listening socket (multishot where the
// kernel has it, `accept_depth` single accepts otherwise), so the kernel
// hands each new connection to whichever loop's accept it reaches, and the
// connection stays on that loop. One listening socket (not one per loop
// with SO_REUSEPORT) keeps "address in use" meaning what users expect.
//
// As on IOCP, operations own their buffers until their completion arrives,
// connection objects are made at start, sends gather many slices in one
// sendmsg, and completions are checked against the connection's
// generation. Receives use a provided-buffer ring, so an idle connection
// holds no receive buffer (IOCP's zero-byte read has the same aim).
//
// Outbound connections (engine::connect()) go to the loop that owns their
// slot through its connect inbox; that loop opens the socket and issues an
// IORING_OP_CONNECT, then reads and sends as on an accepted connection.
// With options::listen false there is no listening socket and no accept.
//
// Concurrency: a connection is only touched by its loop's thread.
// send()/close() from other threads go through the core's per-slot lock
// and, when a queue goes from idle to busy, put the id in the loop's inbox
// and write its eventfd (the wake-up is skipped when the inbox was not
// empty: one wake serves every id queued before the loop looks).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "backends/posix/sockets.hpp"
#include "backends/uring/ring.hpp"
#include "common/completion.hpp"
#include "common/engine_base.hpp"
#include "common/handoffs.hpp"
#include "common/slot_list.hpp"

namespace ionet::uring {

// Monotonic milliseconds, coarse (linger deadlines need no better).
std::uint64_t now_ms() noexcept;

using detail::phase;

// A provided receive buffer, and the poll path's one buffer per loop.
inline constexpr std::uint32_t recv_buffer_bytes = 16 * 1024;

// An IORING_OP_CONNECT in flight, and the address it reads, which must stay
// put until its completion. Kept by the loop for the connects under way, not
// in every connection (most never connect out).
struct pending_connect : op {
  union {
    sockaddr_in v4;
    sockaddr_in6 v6;
  } to{};
  std::uint32_t index = 0;  // its place in loop::connect_records
};
inline constexpr std::uint32_t no_connect = ~std::uint32_t{0};

// One per connection slot, made at start and reused; only its loop's
// thread touches it. The protocol state is common/completion.hpp's, shared
// with the IOCP backend.
struct connection {
  op recv_op;  // the (multishot) receive, or the readiness poll
  op send_op;  // the gathered sendmsg
  op ctl_op;   // a cancel
  detail::conn_protocol p;
  // Read by direct writes from any thread too (write_now): set before the
  // id is published, and closed only after the core has closed the slot
  // (close_slot waits for direct writes).
  int fd = -1;
  std::uint32_t head_offset = 0;  // bytes of the backlog's first slice sent
  std::uint16_t loop = 0;         // the owning loop
  // Its places in its loop's lists (loop::members, paused, lingering).
  detail::list_place member, paused, lingering;
  bool cancelling = false;  // ctl_op (a cancel) is issued
  // pause_reading() cancelled the multishot receive: its last completion
  // (-ECANCELED) is expected, even if reading resumed meanwhile.
  bool recv_cut = false;
  bool send_inline = true;  // the socket had room: try a plain sendmsg first
  // Connecting: its IORING_OP_CONNECT (loop::connect_records), or none.
  std::uint32_t connect = no_connect;
  detail::slice_chain sending;  // owned by send_op until it completes
};

struct loop : detail::loop_lists<connection> {
  ring r;
  engine_impl* engine = nullptr;
  std::uint16_t index = 0;
  std::thread thread;

  int wake_fd = -1;  // eventfd: the inbox has ids
  std::uint64_t wake_value = 0;
  op wake_op;
  op accept_op;
  op ignore_op;  // completions nobody waits for (cancels of loop ops)
  std::uint32_t accepts_armed = 0;
  // Accepting paused after a failure (posix::classify_accept_error): the
  // next tick arms one accept, and the rest follow once one succeeds.
  bool accept_probing = false;

  detail::handoffs handoffs;               // connections with something to send
  detail::task_inbox tasks;                // engine::post(), inline model
  std::uint64_t ops = 0;                   // operations in flight on this ring
  std::atomic<std::uint64_t> ops_seen{0};  // copies for stats()
  std::atomic<std::uint32_t> accepts_seen{0};
  // Outbound connections to begin on this loop (engine::connect(), from any
  // thread); has_connects is set with each push.
  std::mutex connects_lock;
  std::vector<std::pair<connection_id, endpoint>> connects;  // [connects_lock]
  std::atomic<bool> has_connects{false};
  std::vector<std::pair<connection_id, endpoint>> connects_local;
  // The connects in flight own a record each; the records are reused.
  std::deque<pending_connect> connect_records;
  std::vector<std::uint32_t> free_connects;

  // Scratch for sendmsg: the kernel copies msghdr and iovecs when it
  // consumes the SQE (IORING_FEAT_SUBMIT_STABLE), so they live until the
  // next submit. Fixed capacity: submitted early when full.
  std::vector<iovec> iovecs;
  std::vector<msghdr> headers;
  std::size_t iovecs_used = 0;
  std::size_t headers_used = 0;
  std::unique_ptr<char[]> poll_buf;  // the poll path's receive buffer
  detail::event_batch batch;
  bool stopping = false;
};

class engine_impl final : public detail::engine_base<engine_impl> {
 public:
  explicit engine_impl(const options& opts) : engine_base(opts) {}
  ~engine_impl() override;

  status start() override;
  std::uint16_t port() const noexcept override { return port_; }
  engine_stats stats() const override;
  const char* backend_name() const noexcept override { return "uring"; }
  // engine_core::direct_write: with nothing queued or being written, what
  // the socket takes now, from any thread: a plain sendmsg (unless
  // inline_send is off), as flush() tries first. The core has claimed the
  // slot, so no send of the loop's runs meanwhile.
  static std::size_t write_now(void* self, std::uint32_t slot,
                               std::span<const std::byte> head,
                               std::span<const std::byte> body);
  // engine_base::address(): the slot's socket is live meanwhile.
  std::optional<endpoint> address_of(std::uint32_t slot, bool local) const {
    return posix::address_of(conns_[slot].fd, local);
  }

  // Completion handlers (accept.cpp, connection.cpp).
  static void on_accept(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_wake(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_recv(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_send(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_ctl(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_connect(loop& l, op& o, const io_uring_cqe& cqe);
  static void on_ignored(loop& l, op& o, const io_uring_cqe& cqe);

 private:
  friend class detail::engine_base<engine_impl>;
  // engine.cpp
  void run(loop& l);
  void finish(loop& l);
  void wind_down(loop& l);
  void hand_off(connection_id id);
  // engine_base: begins `id`'s connect on the loop that owns it (any
  // thread, inside the gate).
  void begin_connect(connection_id id, const endpoint& to);
  // The loop: begins the connects handed to it; true when there were any.
  bool start_connects(loop& l);
  void release_resources() noexcept;
  void wake_for_stop() noexcept;
  void stop_locked() noexcept;
  // engine_base: work and timers (common/tasks.hpp), inline model.
  void post_task(connection_id id, bool bound, task fn);
  void timers_changed() noexcept;

  // accept.cpp
  status open_listener(const endpoint& ep);
  void arm_accepts(loop& l);
  void accepted(loop& l, int fd);
  // The slot's connection object, made (any thread) if it is not yet.
  connection& make_connection(std::uint32_t slot);

  // connection.cpp; on the connection's loop thread.
  void open_connection(loop& l, connection& c, int fd, connection_id id);
  // An outbound connection: its socket and its IORING_OP_CONNECT, or its
  // closed event when it cannot begin (stop(), close(reset), no socket).
  void start_connect(loop& l, connection_id id, const endpoint& to);
  void connect_finished(loop& l, connection& c, int res);
  void arm_recv(loop& l, connection& c);
  void on_bytes(loop& l, connection& c, const std::byte* data, std::size_t n);
  void read_ready(loop& l, connection& c);
  void on_eof(loop& l, connection& c);
  void on_error(loop& l, connection& c, int negative_errno);
  void flush(loop& l, connection& c);
  void send_done(loop& l, connection& c, int res);
  // Gives back the slices of `chain` that `bytes` covered; a rest goes to
  // the front of the backlog. True when all was sent.
  bool sent_part(connection& c, detail::slice_chain& chain,
                 std::uint64_t bytes);
  void begin_close(loop& l, connection& c, std::error_code reason,
                   bool graceful);
  void cancel_ops(loop& l, connection& c);
  void maybe_finish(loop& l, connection& c);
  void check_lingering(loop& l, std::uint64_t now_ms);
  // Stops reading a connection whose peer sends more than it reads
  // (engine_core::should_pause_reading); try_resume() reads it again once
  // its queue drains, resume_reading() tries every paused one of the loop.
  void pause_reading(loop& l, connection& c);
  void try_resume(loop& l, connection& c);
  void resume_reading(loop& l);
  // The loop's connections: closes what timed out, and gives a writable
  // event to one owed it (engine_core::check_writable).
  void sweep_connections(loop& l);
  bool current(const loop& l, const connection& c, const op& o) noexcept;

  features features_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  detail::slot_array<connection> conns_;  // made as slots come into use
  std::vector<std::unique_ptr<loop>> loops_;

  // stop() has seen every caller leave the gate: no connect is handed to a
  // loop any more, so a loop that has wound down may end.
  std::atomic<bool> callers_gone_{false};
  std::atomic<std::uint64_t> stale_completions_{0};
  std::atomic<std::uint64_t> accept_failures_{0};
};

}  // namespace ionet::uring
