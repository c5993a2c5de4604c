/// \file
/// The contract. Every backend (iocp, libuv, uring) implements exactly these
/// operations; nothing above a backend knows which one it is.
///
/// A backend provides:
/// - start()        bind, listen, reserve every pool, start threads;
///                  on failure nothing is left running. After a stop() it
///                  starts again with the same pools: ids go on from the
///                  last run's, so none of them names a new connection.
/// - port()         the bound port (useful with options::port == 0).
/// - connect()      an outbound connection: its id at once, then its
///                  connected event, or a closed event that says why it
///                  did not open (connection_refused, connect_timeout,
///                  host_unreachable, a native code). Then it is a
///                  connection like any other.
/// - poll/release   the pull model: batches of events for the user's thread.
/// - send()         any thread; never blocks on I/O. queue_full and
///                  pool_exhausted are answered at once; the connection
///                  gets event_type::writable once it has drained
///                  (options::send_low_water). On libuv and io_uring a
///                  frame that finds nothing queued for its connection is
///                  written at once from the caller's buffer, on the
///                  caller's thread (a non-blocking send); what the socket
///                  does not take, and every other frame, is copied into
///                  pool slices and written by the connection's thread.
/// - close()        graceful (queued bytes are flushed, then the socket
///                  closes) or reset (they are dropped, the peer gets a
///                  reset).
/// - set_context()  attach the user's per-connection pointer.
/// - queued_bytes() what a connection has queued for sending.
/// - peer_address(), local_address()  a connection's two ends.
/// - stats()        counters, consistent enough for monitoring.
/// - post()         any thread: a function run on an engine thread (inline
///                  model) or handed out as an event_type::task event (pull
///                  model); post(conn, fn) in order with conn's events.
/// - after(), every(), cancel()  timers, on the same terms as post(); each
///                  fires at its deadline (armed with the OS, not swept).
///                  Whatever is posted or armed when the engine stops is
///                  destroyed unrun; a restart starts with none.
/// - shutdown()     refuses new connections, closes every connection
///                  gracefully, then stop()s (at the latest after a grace
///                  period).
/// - stop()         closes everything, waits for every outstanding operation,
///                  joins threads. Safe to call twice and from the
///                  destructor. On one of the engine's own threads (an
///                  inline handler: any IOCP worker or its housekeeper, a
///                  libuv loop, an io_uring ring) it cannot wait for them:
///                  there it only begins the stop (no call enters any more,
///                  every connection gets closed) and returns at once; the
///                  next stop() from another thread, or the destructor,
///                  waits and joins.
///
/// Portability: connection ids, events and errors are identical on every
/// backend. Timing (which thread runs a handler, how reads are split in raw
/// mode) is not.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "ionet/error.hpp"
#include "ionet/events.hpp"
#include "ionet/export.hpp"
#include "ionet/options.hpp"

namespace ionet {

/// Work for an engine thread: engine::post(), after(), every(). It must
/// not throw (the process ends if it does), and it runs where a handler
/// does: a task that blocks holds up the connections of its thread.
using task = std::function<void()>;

/// A timer of engine::after() or every(): unique for the engine's lifetime
/// (across stop() and start() too). The value-initialised id names none.
enum class timer_id : std::uint64_t {};

/// What engine::after() and every() answer: the timer's id, or why there
/// is none.
struct timer_result {
  timer_id id{};          ///< the timer, for engine::cancel()
  std::error_code error;  ///< not_running, or bad_option
  /// Whether the timer was armed.
  explicit operator bool() const noexcept { return !error; }
};

/// Counters from engine::stats(), consistent enough for monitoring.
struct engine_stats {
  /// Engine threads serving connections (libuv loops, io_uring rings, IOCP
  /// workers): options::threads as the backend resolved it.
  std::uint64_t threads = 0;
  /// Connections open now: accepted and outbound (connecting ones too),
  /// less closed.
  std::uint64_t connections_open = 0;
  std::uint64_t accepted = 0;  ///< inbound connections that got a slot
  /// Outbound connections begun: connect() calls that got a slot.
  std::uint64_t connects = 0;
  /// Of those, closed before they opened (refused, timed out, ...).
  std::uint64_t connect_failures = 0;
  /// Of accepted and connects, closed (their slot is recycled).
  std::uint64_t closed = 0;
  /// Accepted by the OS, then refused (reset): max_connections were open,
  /// or a shutdown() was under way.
  std::uint64_t rejected = 0;
  /// Bytes read from sockets, framing included.
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;  ///< written to sockets, framing included
  /// Messages delivered as message events.
  std::uint64_t messages_received = 0;
  std::uint64_t messages_sent = 0;    ///< accepted by send()
  std::uint64_t bytes_queued = 0;     ///< accepted by send(), framing included
  std::uint64_t bytes_dropped = 0;    ///< queued, then dropped by a close/reset
  std::uint64_t send_stale = 0;       ///< send() to a stale id
  std::uint64_t send_queue_full = 0;  ///< send() refused: queue_full
  /// send() refused: pool_exhausted (the slice pool had too few free
  /// slices for the message).
  std::uint64_t send_pool_exhausted = 0;
  /// Times reading paused on a connection whose peer sends more than it
  /// reads: its queue half full (max_queued_bytes / 2), or, past 3/4 of
  /// max_total_queued_bytes, more than an even share of the queued bytes.
  /// It is read again once its queue is under a quarter and the total under
  /// half. Pull model: also when the event queue is full
  /// (event_queue_capacity); read again once poll() has made room. While
  /// paused, read_timeout does not run: a frame left partial gets a full
  /// read_timeout once reading resumes.
  std::uint64_t read_pauses = 0;
  /// Connections closed: message_too_large.
  std::uint64_t frames_too_large = 0;
  /// Slices in the pool (options::pool_slices, as resolved at start).
  std::uint64_t pool_slices_total = 0;
  /// Of those, slices in use now.
  std::uint64_t pool_slices_in_use = 0;
  /// Pull model: waiting for poll().
  std::uint64_t events_pending = 0;
  std::uint64_t allocations_after_start = 0;  ///< pool growth beyond start
  /// \name Completion backends (IOCP, io_uring); zero where they do not apply.
  /// @{
  std::uint64_t accepts_pending = 0;       ///< accepts posted ahead of clients
  std::uint64_t accept_pool_growths = 0;   ///< times the posted accepts grew
  std::uint64_t accept_failures = 0;       ///< failed accepts, re-posted
  std::uint64_t sockets_created = 0;       ///< sockets made for the accept pool
  std::uint64_t sockets_reused = 0;        ///< accepts on a recycled socket
  std::uint64_t stale_completions = 0;     ///< for a connection already gone
  std::uint64_t operations_in_flight = 0;  ///< issued, not yet completed
  /// @}
};

/// How engine::connect() makes one outbound connection.
struct connect_options {
  /// How long it may take to open; unset: options::connect_timeout. 0
  /// leaves it to the system.
  std::optional<std::chrono::milliseconds> timeout;
  /// The connection's context (event::context()) from the start: its
  /// connected or closed event carries it already.
  void* context = nullptr;
  /// Serve the new connection on the engine thread that serves this one
  /// (a proxy's client and its upstream: their handlers then run on one
  /// thread, and a send from one to the other is written at once instead
  /// of handed to another thread). Ignored when it names no open
  /// connection (then the next thread in turn) and on the IOCP backend,
  /// whose workers all serve every connection.
  connection_id beside{};
};

/// What engine::connect() answers: the new connection's id, or why there
/// is none.
struct connect_result {
  /// The new connection; names none when `error` is set.
  connection_id conn{};
  /// bad_address, bad_option, connection_limit or not_running.
  std::error_code error;
  /// True when the connection was begun.
  explicit operator bool() const noexcept { return !error; }
};

/// A TCP server engine: one backend's implementation of the contract that
/// engine.hpp describes. Made by make_engine().
class IONET_API engine {
 public:
  /// Destroying an engine stops it first, as stop() does.
  virtual ~engine() = default;
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Binds, listens, reserves every pool and starts the threads; on failure
  /// nothing is left running, and the status says what was wrong.
  [[nodiscard]] virtual status start() = 0;
  /// The bound port (useful with options::port == 0); 0 when the engine
  /// does not listen (options::listen).
  virtual std::uint16_t port() const noexcept = 0;

  /// Begins an outbound connection to `host` (an IPv4 or IPv6 literal) and
  /// `port`, on an engine thread; any thread. Answers at once with the new
  /// connection's id, which then gets a `connected` event (with the peer's
  /// address), or a `closed` event whose reason says why it did not open:
  /// connection_refused, connect_timeout, host_unreachable, or the native
  /// code. From `connected` on it is a connection like any other. Sends
  /// made before it opens are queued and go out once it has; close() ends
  /// it at any point (graceful: once it has opened and sent what was
  /// queued). It counts against max_connections. Errors: bad_address (not
  /// a literal, or port 0), bad_option (a negative timeout),
  /// connection_limit (max_connections are open), not_running (not
  /// started, stopping, or shutdown() under way).
  [[nodiscard]] virtual connect_result connect(
      const std::string& host, std::uint16_t port,
      const connect_options& how = {}) = 0;

  /// The pull model (no options::handler). Waits up to `timeout` for
  /// events, fills `out` with at most out.size(), returns how many. Every
  /// event returned must be passed to release(), once. Returns 0 at once
  /// when stopped and drained, and always in handler mode (the handler
  /// gets every event; there is nothing to poll).
  /// A connection's events come in order: connected, its messages, closed.
  /// Release them in that order too, its closed event last: the closed
  /// event hands the context back for the last time (free it there), and
  /// once that event is released the slot may serve the next connection.
  /// The messages one read brought share one buffer, freed when the last of
  /// them is released: holding one message holds the bytes of its read.
  /// When event_queue_capacity events wait to be polled, the engine stops
  /// reading until poll() makes room; after a peer's EOF a connection
  /// closes only once its messages are released (replies sent first go).
  virtual std::size_t poll(std::span<event> out,
                           std::chrono::milliseconds timeout) = 0;
  /// Gives events back; any thread, any number at once.
  virtual void release(std::span<const event> events) noexcept = 0;

  /// Sends `bytes` to `conn` as one message; any thread, never blocks on
  /// I/O. Errors: errc::stale_connection, closing, message_too_large,
  /// queue_full, pool_exhausted, not_running.
  [[nodiscard]] virtual std::error_code send(
      connection_id conn, std::span<const std::byte> bytes) = 0;
  /// Closes `conn`; its closed event follows, with closed_by_user.
  /// graceful: what is queued is sent first, then the connection shuts
  /// down and waits briefly for the peer's end. reset: what is queued is
  /// dropped and the peer gets a reset at once; it also cuts short a
  /// graceful close still sending (to a peer that stopped reading).
  /// Errors: stale_connection, closing (close() was called already).
  [[nodiscard]] virtual std::error_code close(
      connection_id conn, close_mode mode = close_mode::graceful) = 0;
  /// Half-close: no more sends on `conn` (they answer closing); once what
  /// is queued has gone out, the peer sees the end of our stream (FIN).
  /// Reading goes on: the connection closes when the peer ends its side
  /// (peer_closed), or on close(). Errors: stale_connection, closing
  /// (close() or shutdown_send() was called already), not_running.
  [[nodiscard]] virtual std::error_code shutdown_send(connection_id conn) = 0;
  /// Attaches the user's per-connection pointer (event::context()).
  [[nodiscard]] virtual std::error_code set_context(connection_id conn,
                                                    void* context) = 0;
  /// The addresses of `conn`'s socket: its peer's, and ours (for a server
  /// listening on a wildcard address, the one the peer connected to).
  /// nullopt when the id is stale, the engine is not running, or the system
  /// cannot tell (the peer already reset the connection). Any thread; a
  /// system call each.
  virtual std::optional<endpoint> peer_address(connection_id conn) const = 0;
  /// Our end of `conn`'s socket; see peer_address().
  virtual std::optional<endpoint> local_address(connection_id conn) const = 0;
  /// Bytes queued on `conn` for sending (framing included) and not yet
  /// written to its socket; nullopt when the id is stale or the engine is
  /// not running. Any thread; a moment's figure, as other threads send and
  /// the connection's thread writes.
  virtual std::optional<std::uint64_t> queued_bytes(
      connection_id conn) const = 0;

  /// \name Work and timers on engine threads
  /// Inline model (options::handler): the function runs on an engine
  /// thread, between handler calls. Pull model: it comes out of poll() as
  /// an event_type::task event; call event::run() on your thread, then
  /// release() it, so a single-threaded loop stays single-threaded.
  /// When the engine stops, what was posted or armed and has not run yet
  /// (task events nobody polled too) is destroyed unrun; calls on a
  /// stopped engine answer not_running; a restart starts with none.
  /// Portability: libuv and io_uring run post(fn) on any loop and timers
  /// on the first loop; IOCP runs posts on any worker and timers on its
  /// housekeeper thread (Windows waits in ticks of ~16 ms).
  /// @{

  /// Runs `fn` on an engine thread soon (pull: queues a task event). Any
  /// thread. Errors: not_running; bad_option for an empty `fn`.
  [[nodiscard]] virtual std::error_code post(task fn) = 0;
  /// Runs `fn` on the thread that serves `conn`, in order with its events:
  /// after those already delivered, never during a handler call of `conn`
  /// (pull: a task event queued behind the events `conn` has queued). If
  /// `conn` closes first, `fn` still runs (after its closed event), so
  /// look the connection up again in it. Errors: stale_connection,
  /// not_running, bad_option (an empty `fn`).
  [[nodiscard]] virtual std::error_code post(connection_id conn, task fn) = 0;
  /// Runs `fn` once, `delay` from now (never sooner), as post() does.
  /// Errors: not_running, bad_option (an empty `fn`).
  [[nodiscard]] virtual timer_result after(std::chrono::milliseconds delay,
                                           task fn) = 0;
  /// Runs `fn` every `period` until cancel(), as post() does. A firing
  /// that comes late does not make up the ones it missed; in the pull
  /// model a firing still waiting for poll() skips the next. Errors:
  /// not_running, bad_option (a period below 1 ms, an empty `fn`).
  [[nodiscard]] virtual timer_result every(std::chrono::milliseconds period,
                                           task fn) = 0;
  /// Cancels a timer; true when it was pending (a once timer not yet run,
  /// a periodic one not cancelled). Any thread. Called from a timer's
  /// function (inline), or on the thread that runs task events (pull), it
  /// is final: the timer never runs after cancel() returns. From any other
  /// thread a firing already under way may still finish.
  virtual bool cancel(timer_id id) noexcept = 0;
  /// @}

  /// Counters, consistent enough for monitoring.
  virtual engine_stats stats() const = 0;
  /// Closes everything, waits for every outstanding operation, joins the
  /// threads; on an engine thread it only begins the stop (see engine.hpp).
  virtual void stop() noexcept = 0;
  /// A graceful stop: new connections are refused (reset, and counted in
  /// engine_stats::rejected), every connection is closed gracefully (what
  /// is queued goes out, then the connection shuts down and waits briefly
  /// for the peer's end; its closed event says engine_stopped), and once
  /// every connection is finished, or `grace` has passed, stop() ends what
  /// is left (with a reset). Sends to a connection not yet closed are
  /// still taken meanwhile. On an engine thread it only begins: nothing new
  /// is let in and every connection is closing; a stop() from another
  /// thread ends it. Returns at once when the engine is not running.
  virtual void shutdown(std::chrono::milliseconds grace) noexcept = 0;

  /// Which backend this is: "libuv", "iocp" or "uring".
  virtual const char* backend_name() const noexcept = 0;

 protected:
  engine() = default;
};

/// The backend chosen when the library was configured (IONET_BACKEND).
IONET_API std::unique_ptr<engine> make_engine(const options& opts);

}  // namespace ionet
