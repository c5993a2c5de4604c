// The IOCP backend: the seed's design. One completion port; worker threads
// (2 per CPU by default) take completions from it in batches. Sockets are
// made before clients arrive and kept accepting with AcceptEx; a closed
// connection's socket goes back to the pool through DisconnectEx. Every
// per-connection object and every buffer is made at start. Writes from
// any thread are copied into slices and handed to a worker with
// PostQueuedCompletionStatus.
//
// Concurrency: completions of one connection may reach different workers
// at once (a read and a write), so each connection has a slim lock that its
// completion handlers hold; events of one connection are emitted and
// delivered under it, which keeps them in order. send()/close() from the
// user never take it: they go through the core's per-slot lock and, when a
// connection's queue goes from idle to busy, post one packet.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/iocp/completion_port.hpp"
#include "backends/iocp/operation.hpp"
#include "backends/iocp/winsock.hpp"
#include "common/completion.hpp"
#include "common/engine_base.hpp"

namespace ionet::iocp {

// A socket of the accept pool, with the operations that accept on it and,
// after its connection ends, disconnect it for reuse.
struct socket_entry {
  operation accept_op;
  operation disconnect_op;
  SOCKET s = INVALID_SOCKET;
  std::uint32_t index = 0;
  bool skip_on_success = false;  // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS set
  bool reused = false;           // recycled by DisconnectEx at least once
  // AcceptEx writes the local and the remote address here (each with the
  // 16 spare bytes it requires).
  static constexpr DWORD address_bytes = sizeof(sockaddr_in6) + 16;
  char addresses[2 * address_bytes]{};
};

using detail::phase;

// One per connection slot, made at start and reused. Guarded by `lock`
// (held by whichever thread processes the connection). The protocol state
// is common/completion.hpp's, shared with the io_uring backend.
struct connection {
  SRWLOCK lock = SRWLOCK_INIT;
  operation read_op;     // zero-byte or data read
  operation write_op;    // gathered WSASend
  operation connect_op;  // outbound: the packet that begins it, then ConnectEx
  detail::conn_protocol p;
  // Accepted: its accept-pool entry, whose socket `s` is. Outbound
  // (engine::connect()): none; `s` is the connection's own, closed when it
  // ends (never recycled through DisconnectEx: Wine refuses ConnectEx on
  // such a socket, and Windows allows it only after TIME_WAIT).
  socket_entry* entry = nullptr;
  SOCKET s = INVALID_SOCKET;
  // `s` is in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode.
  bool skip_on_success = false;
  // Outbound: where to connect (set by begin_connect, read by the worker
  // that begins it), and the same as a sockaddr, which ConnectEx reads
  // and which stays here until its completion has come.
  endpoint connect_to;
  sockaddr_storage connect_addr{};
  connection_id connect_id{};
  // The port refused the packet that begins the connect: the housekeeper
  // begins it (the operation stays counted in ops_ meanwhile).
  bool begin_pending = false;
  // No read could be issued (no slice to read into, or the system was
  // short of resources); the housekeeper retries.
  bool starved = false;
  bool paused = false;   // not read for now: its peer sends more than it reads
  bool watched = false;  // on the housekeeper's list (guarded by watch_lock_)
  // post(conn, fn), inline model: run by a worker under `lock`, in order
  // (one packet at a time, sent when the inbox stops being empty).
  detail::task_inbox tasks;
};

// post(fn), inline model: a packet that carries its function to a worker.
struct task_op : operation {
  task fn;
};

class engine_impl final : public detail::engine_base<engine_impl> {
 public:
  explicit engine_impl(const options& opts);
  ~engine_impl() override;

  status start() override;
  std::uint16_t port() const noexcept override { return port_; }
  engine_stats stats() const override;
  const char* backend_name() const noexcept override { return "iocp"; }
  // engine_base::address(): the slot's socket is live meanwhile.
  std::optional<endpoint> address_of(std::uint32_t slot, bool local) const {
    return iocp::address_of(conns_[slot].s, local);
  }

  // --- work (engine.cpp): post(fn), post(conn, fn) packets, inline ---
  static void on_task(engine_impl& e, operation& op, const completion& c);
  static void on_conn_tasks(engine_impl& e, operation& op, const completion& c);

  // --- accept pool (accept_pool.cpp) ---
  static void on_accept(engine_impl& e, operation& op, const completion& c);
  static void on_disconnect(engine_impl& e, operation& op, const completion& c);

  // --- connections (connection.cpp) ---
  static void on_read(engine_impl& e, operation& op, const completion& c);
  static void on_write(engine_impl& e, operation& op, const completion& c);
  static void on_posted(engine_impl& e, operation& op, const completion& c);
  // engine::connect(): the begin packet, and the ConnectEx's completion.
  static void on_connect(engine_impl& e, operation& op, const completion& c);

 private:
  friend class detail::engine_base<engine_impl>;
  enum class next_read : std::uint8_t { none, ready, data };
  // How a post of an AcceptEx went: a client's reset (is_accept_reset) is
  // the entry's alone; any other failure pauses posting (the backoff
  // applies) and ends the round.
  enum class posted : std::uint8_t { ok, failed, paused };

  // accept_pool.cpp
  status open_listener(const endpoint& ep);
  std::error_code make_pool();
  // Posts accepts up to the target, unless paused; how many it posted.
  std::uint32_t top_up_accepts();
  // How long the housekeeper may wait: `longest`, or less when a pause's
  // backoff ends sooner.
  DWORD accept_retry_wait(DWORD longest);
  posted post_accept(socket_entry& entry);
  // After a failed AcceptEx that was not a client's reset: no accept is
  // posted until a backoff has passed. With accept_lock_ held.
  void pause_accepts();
  void give_back(socket_entry& entry, bool reusable);
  // Resets the entry's connection and gives the entry back without its socket.
  void abort_socket(socket_entry& entry);
  void accept_done(socket_entry& entry, DWORD error);
  void grow_accepts();
  void check_listener();
  void disconnect(socket_entry& entry);

  // connection.cpp; all with the connection's lock held.
  void open_connection(connection& c, socket_entry& entry, connection_id id,
                       const endpoint& peer);
  // Puts the slot on the housekeeper's list: a linger deadline, a read
  // waiting for slices, or a hand-off the port could not take.
  void watch(std::uint32_t slot);
  void read_loop(connection& c, next_read next);
  bool issue_read(connection& c, bool data, completion& done);
  // Slices for a data read, up to `want`, within read_budget_; false when
  // the budget or the pool has none left.
  bool take_read_buffers(std::uint32_t want, detail::slice_chain& out);
  void give_read_buffers(detail::slice_chain& chain);
  next_read read_done(connection& c, const completion& done);
  void flush(connection& c);
  bool write_done(connection& c, const completion& done);
  // A paused connection (read_done) is read again once its queue has
  // drained (engine_core::may_resume_reading); false when not yet.
  bool try_resume(connection& c);
  void on_eof(connection& c);
  void begin_close(connection& c, std::error_code reason, bool graceful);
  void maybe_finish(connection& c);
  void housekeep_connection(connection& c, std::uint64_t now);
  // engine_base: has a worker begin `id`'s connect (any thread, inside the
  // gate): a packet through the port, or the housekeeper if the port
  // cannot take it.
  void begin_connect(connection_id id, const endpoint& to);
  // On a worker, the lock held: the socket, bound and associated with the
  // port, then ConnectEx (or the closed event, if it cannot begin).
  void start_connect(connection& c, connection_id id);
  // The ConnectEx finished: open and reading, or closed with why not.
  void connect_done(connection& c, const completion& done);
  // An outbound connection's socket, when the connection has ended.
  void close_outbound(connection& c);

  // engine.cpp
  void worker_main();
  void housekeeper_main();
  void hand_off(connection_id id);
  void post_task(connection_id id, bool bound, task fn);
  void timers_changed() noexcept;
  void wake_for_stop() noexcept;
  // Queues the packet that tells a worker to leave (each passes it on).
  void post_quit() noexcept;
  void stop_locked() noexcept;
  void close_all();
  // Closes what timed out, and gives a writable event to a connection
  // owed one (engine_core::check_writable).
  void sweep_connections();
  void wait_drained();
  void release_resources() noexcept;

  // Reads the extension functions and decides skip_mode_safe_ from `s`.
  status load_provider(SOCKET s);
  // start() of an engine that does not listen: load_provider() from a
  // socket made for it.
  status open_provider();

  void op_started() noexcept { ops_.fetch_add(1, std::memory_order_relaxed); }
  void op_finished() noexcept { ops_.fetch_sub(1, std::memory_order_acq_rel); }

  completion_port cport_;
  extensions ext_;
  // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is safe: no non-IFS layered
  // provider sits on this family's TCP (provider_is_ifs), and this is not
  // Wine (see open_listener).
  bool skip_mode_safe_ = false;
  SOCKET listen_ = INVALID_SOCKET;
  int family_ = AF_INET;
  WSAEVENT accept_event_ = WSA_INVALID_EVENT;
  std::uint16_t port_ = 0;
  std::uint32_t workers_wanted_ = 0;

  std::unique_ptr<connection[]> conns_;
  std::unique_ptr<socket_entry[]> entries_;
  std::uint32_t entry_count_ = 0;

  // The accept pool. Guarded by accept_lock_.
  std::mutex accept_lock_;
  std::vector<std::uint32_t> free_entries_;  // entries not accepting nor in use
  std::uint32_t posted_accepts_ = 0;
  std::uint32_t accept_target_ = 0;  // accepts to keep posted
  // close_all() cancelled the posted accepts: none is posted any more.
  bool accepts_closed_ = false;
  // Paused (pause_accepts): when to post again, and the backoff, which
  // doubles with each failure until an accept succeeds.
  std::uint64_t retry_after_ms_ = 0;
  std::uint32_t retry_backoff_ms_ = 0;

  // Slots the housekeeper looks at on its next round (see watch()); each
  // at most once, so it never outgrows its reserve of max_connections.
  std::mutex watch_lock_;
  std::vector<std::uint32_t> watch_list_;

  operation posted_op_;      // the OVERLAPPED of every hand-off packet
  operation quit_op_;        // tells a worker to leave
  operation conn_tasks_op_;  // key: a slot whose `tasks` wait
  // post(fn) the port could not take: the housekeeper runs them.
  detail::task_inbox spare_tasks_;

  std::vector<std::thread> workers_;
  std::thread housekeeper_;
  std::atomic<bool> closed_all_{false};  // the housekeeper closed everything
  std::atomic<std::int64_t> ops_{0};     // operations and packets in flight
  // Slices held by reads in flight, and how many they may hold: the quarter
  // of the pool that the default max_total_queued_bytes leaves to reads.
  // Without a cap, reads whose packets wait in the port (every completion
  // does without skip-on-success) take the whole pool, and send() fails
  // with pool_exhausted under its own cap.
  std::atomic<std::uint32_t> read_slices_{0};
  std::uint32_t read_budget_ = 0;
  HANDLE housekeeper_wake_ = nullptr;

  std::atomic<std::uint64_t> accepts_pending_{0};
  std::atomic<std::uint64_t> accept_growths_{0};
  std::atomic<std::uint64_t> accept_failures_{0};
  std::atomic<std::uint64_t> sockets_created_{0};
  std::atomic<std::uint64_t> sockets_reused_{0};
  std::atomic<std::uint64_t> stale_completions_{0};
  // ConnectEx calls in flight: while any is, the housekeeper looks at the
  // connect deadlines every round, not once a second.
  std::atomic<std::uint32_t> connects_in_flight_{0};
};

}  // namespace ionet::iocp
