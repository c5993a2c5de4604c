// What every backend shares per connection: the phases of the close
// protocol, the count of operations in flight, and the steps of sending and
// closing that do not touch the OS. Each backend keeps a conn_protocol in
// its connection object and calls these from whichever thread owns the
// connection at the moment (its lock held on IOCP, its loop's thread on
// io_uring and libuv); the OS calls around them are the backend's.
//
// The rules they follow:
// - every operation issued counts in `in_flight` until its completion has
//   been processed, and the slot is recycled only when the count is zero
//   in phase `draining`, so no completion can reach a newer connection
//   (libuv counts none: its handle's close callback comes after every
//   request's);
// - at most one send is in flight per connection; its slices go back to
//   the pool when it completes;
// - a graceful close sends everything queued, shuts down our side and
//   waits (lingers) for the peer's FIN or a deadline; an abortive one drops
//   what is queued, cancels what is in flight and resets.
#pragma once

#include <cstdint>
#include <system_error>

#include "common/engine_core.hpp"
#include "common/slab_pool.hpp"

namespace ionet::detail {

enum class phase : std::uint8_t {
  idle,        // the slot is free
  connecting,  // outbound (engine::connect()): the connect is under way
  open,        // serving
  lingering,   // closed for the user; our FIN is out, waiting for the peer's
  draining,    // closed for the user; waiting for operations in flight
};

struct conn_protocol {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  std::uint32_t in_flight = 0;  // operations issued, completion not processed
  phase state = phase::idle;
  bool reading = false;    // a receive is issued
  bool writing = false;    // a send is issued
  bool eof = false;        // the peer shut down its side
  bool abortive = false;   // ends with a reset
  bool fin_first = false;  // our FIN went out before the peer's (linger())
  slice_chain backlog;     // taken from the core's queue, not yet sent
  std::uint64_t deadline_ms = 0;  // lingering: when to give up on the peer

  // A new connection in this slot.
  void open(std::uint32_t new_generation) noexcept {
    generation = new_generation;
    in_flight = 0;
    state = phase::open;
    reading = writing = eof = abortive = fin_first = false;
    backlog = slice_chain{};
    deadline_ms = 0;
  }
  // A new outbound connection in this slot, its connect not yet done.
  void open_connecting(std::uint32_t new_generation) noexcept {
    open(new_generation);
    state = phase::connecting;
  }
  // Open for the user: serving, or not yet connected (connect()).
  bool active() const noexcept {
    return state == phase::open || state == phase::connecting;
  }
  // Still reading: serving, or waiting for the peer's FIN.
  bool live() const noexcept {
    return state == phase::open || state == phase::lingering;
  }
  // Nothing left to wait for: the backend releases the socket and the slot.
  bool finished() const noexcept {
    return state == phase::draining && in_flight == 0;
  }
};

// How long a graceful close waits for the peer's FIN.
inline constexpr std::uint64_t linger_ms = 2000;
// Slices gathered by one send (128 KiB of 512-byte slices): the bound of
// the send's buffer array, and what one connection writes before the
// next send is issued.
inline constexpr std::uint32_t gather_max = 256;

// The next send: up to `max_slices` slices from the backlog, refilled from
// the core's queue when empty. An empty chain means nothing to send (or
// not now: closed, still connecting, or a send already in flight); then
// `close_now` tells
// whether the connection should close, why, and whether abortively
// (close(reset): even with a send in flight), and whether to shut the
// socket's sending side first (shutdown_send(); conn_protocol::fin_first
// is then set). Every flush
// passes here, after a write completed too: a connection owed a writable
// event that has drained gets it into `out` (engine_core::check_writable).
engine_core::taken next_send(engine_core& core, conn_protocol& c,
                             std::uint32_t max_slices, event_batch& out);

// A send the system refused for now (short of buffers; nothing was sent):
// its slices go back in front of the backlog, to go out first next time.
void requeue_send(engine_core& core, conn_protocol& c,
                  slice_chain& chain) noexcept;

// An outbound connection's connect succeeded: it is open, its connected
// event (with `peer`) is in `out`. The backend starts reading and flushes
// (what was sent while it connected goes out). False when it was no
// longer connecting (closed meanwhile).
bool connect_done(engine_core& core, conn_protocol& c, const endpoint& peer,
                  event_batch& out);

// The first half of every close: the user gets the closed event, the id is
// dead, queued bytes that were never sent are dropped (and counted), and
// the connection is draining (abortive unless `graceful`). False when it
// was not open. The backend then either shuts down its side and lingers
// (graceful, and the peer has not finished: use should_linger) or cancels
// what is in flight.
bool start_close(engine_core& core, conn_protocol& c, std::error_code reason,
                 bool graceful, event_batch& out);
inline bool should_linger(const conn_protocol& c) noexcept {
  return c.state == phase::draining && !c.abortive && !c.eof;
}
// Our FIN is out: wait for the peer's until `now + linger_ms`.
inline void linger(conn_protocol& c, std::uint64_t now_ms) noexcept {
  c.state = phase::lingering;
  c.fin_first = true;
  c.deadline_ms = now_ms + linger_ms;
}

// Whether a finished connection's socket may be recycled for a new one
// (IOCP: DisconnectEx with TF_REUSE_SOCKET). Only after a passive close:
// the side whose FIN goes first holds TIME_WAIT (2 MSL, 120 s by default
// on Windows), and Microsoft's DisconnectEx remarks say a socket reused
// from there is not ready until TIME_WAIT ends, so an active close would
// pin the socket, and with it an accept-pool entry, for minutes. A reset
// leaves nothing to reuse either.
inline bool may_reuse_socket(const conn_protocol& c) noexcept {
  return !c.abortive && !c.fin_first;
}

// The peer's EOF. Returns true when the connection should close now,
// gracefully, with peer_closed (nothing is owed to the peer); otherwise it
// either finished lingering (now draining) or the core will hand it back
// once the replies to the last released messages are out.
bool on_peer_eof(engine_core& core, conn_protocol& c);

// Something ends the connection abruptly: an error on its socket, or
// stop(). What the backend does next:
enum class abrupt : std::uint8_t {
  close,         // it was open (or connecting): close it, abortively (with
                 // the error, or engine_stopped)
  stop_waiting,  // it was lingering for the peer's FIN: it is now draining
                 // and abortive; cancel what is in flight
  nothing,       // already draining
};
abrupt end_abruptly(conn_protocol& c) noexcept;

// How a connection that ran into a timeout closes (engine_core::expired):
// after idle_timeout politely; after read_timeout (a slowloris) or
// write_timeout (a peer that does not read) with a reset.
inline bool graceful_after(std::error_code timeout) noexcept {
  return timeout == errc::idle_timeout;
}

// Gives up on a peer that never sent its FIN: true when the deadline has
// passed (the connection is now draining and abortive).
bool linger_expired(conn_protocol& c, std::uint64_t now_ms) noexcept;

}  // namespace ionet::detail
