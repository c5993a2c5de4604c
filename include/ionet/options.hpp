/// \file
/// Engine options. Every field has a default a server would want; start()
/// validates them all and refuses a bad one with a status that names it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace ionet {

class engine;
struct event;

/// How messages travel on the wire (options::mode).
enum class framing : std::uint8_t {
  /// Each message travels as a 4-byte big-endian length, then the bytes.
  length_prefix,
  /// Bytes pass through unframed: each read is delivered as one message and
  /// send() writes the bytes as they are.
  raw,
};

/// The inline handler: called on an engine thread for each event. The
/// message bytes are valid only during the call. Events of one connection
/// arrive in order and one at a time (a call for a connection never overlaps
/// another for the same connection); different connections may be served
/// by different threads at once.
///
/// Portability: on libuv and io_uring a connection's events all come from
/// the loop (ring) thread that owns it; on IOCP any worker may deliver the
/// next one. Keep per-connection state in the context, not in thread-locals.
using event_handler = std::function<void(engine&, const event&)>;

/// The settings make_engine() takes: address, limits, framing, timeouts,
/// delivery.
struct options {
  /// An IPv4 or IPv6 literal ("127.0.0.1", "::1", "0.0.0.0", "::").
  std::string host = "127.0.0.1";
  /// 0 picks a free port; engine::port() tells which.
  std::uint16_t port = 0;
  /// Whether start() binds and listens on host:port. An engine that only
  /// makes outbound connections (engine::connect()) sets it false; host and
  /// port are then not used, and port() answers 0.
  bool listen = true;
  /// Connections open at once, accepted and outbound (engine::connect())
  /// alike; more are accepted, reset at once (the client sees
  /// connection_reset) and counted (stats().rejected), and connect()
  /// answers errc::connection_limit. Memory for this
  /// many is reserved at start; a connection slot's state is made, and its
  /// pages touched, the first time the slot is used (Linux backends), so
  /// resident memory follows the most connections open at once.
  std::uint32_t max_connections = 10000;
  /// Accepts kept ready ahead of clients (IOCP AcceptEx posts, io_uring
  /// accept SQEs); the libuv backend uses it as the listen backlog floor.
  std::uint32_t accept_depth = 64;
  /// listen() backlog.
  std::uint32_t backlog = 4096;
  /// Share the port with other listeners that set it too (SO_REUSEPORT): the
  /// kernel spreads new connections among them. This is how one host serves
  /// more connections than one process may hold files (ionet-echo
  /// --processes). A port taken without it is still address_in_use.
  /// Portability: Linux backends only; IOCP refuses it (bad_option).
  bool reuse_port = false;
  /// The unit of send buffering: messages are copied into slices of this
  /// size taken from a pool made at start.
  std::uint32_t slice_bytes = 512;
  /// Slices in the pool; 0 sizes it from max_connections (see docs). The
  /// pool's memory is reserved at start and touched only as it is used.
  std::uint32_t pool_slices = 0;
  /// Largest message accepted in either direction (length_prefix payload).
  std::uint32_t max_message_bytes = 1u << 20;
  /// Bytes a connection may have queued for sending before send() answers
  /// queue_full. Must be at least max_message_bytes + 4.
  std::uint32_t max_queued_bytes = 4u << 20;
  /// A connection whose send() answered queue_full or pool_exhausted gets
  /// one event_type::writable once its queued bytes (engine::queued_bytes)
  /// are at most this, and the engine's under 3/4 of their cap
  /// (max_total_queued_bytes): send again then. Unset: a quarter of
  /// max_queued_bytes. Must be below max_queued_bytes.
  std::optional<std::uint32_t> send_low_water;
  /// Engine threads (libuv loops, IOCP workers, io_uring rings). The default
  /// lets the backend choose (libuv and io_uring: 1; IOCP: 2 per CPU, the
  /// seed's rule); 0 is refused. engine_stats::threads says what it became.
  /// (IOCP also runs one housekeeper thread, not counted here.)
  static constexpr std::uint32_t backend_default = 0xffffffffu;
  /// Engine threads: backend_default, or 1 to 256.
  std::uint32_t threads = backend_default;
  /// How messages travel on the wire: length_prefix or raw.
  framing mode = framing::length_prefix;
  /// Bytes queued for sending across all connections before send()
  /// answers queue_full, so a crowd of slow readers cannot exhaust memory.
  /// 0: three quarters of the slice pool (the rest serves reads).
  std::uint64_t max_total_queued_bytes = 0;

  /// Timeouts, checked a few times a second; 0 turns one off. The defaults
  /// are what a server open to the Internet wants: a connection that does
  /// nothing for 5 minutes is closed (idle_timeout, gracefully); one that
  /// leaves a message half-sent for 30 s (slowloris) or does not read what
  /// it is sent for 60 s is reset (read_timeout, write_timeout).
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  /// How long a message may stay partial (see idle_timeout).
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  /// How long queued bytes may make no progress (see idle_timeout).
  std::chrono::milliseconds write_timeout{std::chrono::seconds(60)};
  /// How long an outbound connection (engine::connect()) may take to open
  /// before it is closed with errc::connect_timeout; connect_options can
  /// set it per connection. 0 leaves it to the system (on Linux a connect
  /// to a silent host gives up after about two minutes).
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  /// TCP keepalive on every connection: the first probe after this much
  /// silence, then one every keepalive_interval, `keepalive_probes` in all
  /// (so a vanished peer is noticed in ~2 minutes). 0 turns it off.
  /// Portability: on Windows the probe count is the system's.
  std::chrono::seconds keepalive_idle{60};
  /// Between keepalive probes, once they have begun (see keepalive_idle).
  std::chrono::seconds keepalive_interval{10};
  /// Keepalive probes sent in all (see keepalive_idle).
  std::uint32_t keepalive_probes = 5;

  /// Pull model: most message events waiting for poll(). A connection whose
  /// read finds the queue full stops reading; the messages that read had
  /// decoded wait, in order, until poll() makes room (backpressure; nothing
  /// is dropped, and engine threads never wait for poll()).
  std::uint32_t event_queue_capacity = 65536;
  /// When set, events are delivered inline to this handler on engine
  /// threads and poll() is not used.
  event_handler handler;
};

}  // namespace ionet
