// POSIX socket helpers shared by the Linux backends (libuv, io_uring): the
// listening socket with the errors users should see, and peer addresses.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "ionet/error.hpp"
#include "ionet/events.hpp"
#include "ionet/options.hpp"

namespace ionet::posix {

// socket + SO_REUSEADDR + bind + listen on `ep` with `o.backlog`; extra
// socket() flags in `type_flags` (e.g. SOCK_NONBLOCK). On success `fd` and
// the bound `port` are set; on failure nothing is left open and the status
// names the problem (address_in_use, bad_address, ...).
status open_listener(const endpoint& ep, const options& o, int type_flags,
                     int& fd, std::uint16_t& port);

// A connected socket's address, ours (`local`) or its peer's; nullopt
// when the system cannot tell.
std::optional<endpoint> address_of(int fd, bool local);
// The peer's address (an empty endpoint when the system cannot tell).
inline endpoint peer_of(int fd) {
  return address_of(fd, false).value_or(endpoint{});
}

// The close reason for a failed socket call, from its errno: a reset for
// what the peer or the network did (the peer reset, the keepalive gave up,
// the write end is gone), the native error otherwise, so nothing unusual
// is hidden behind connection_reset.
std::error_code close_reason_of(int err) noexcept;

// TCP_NODELAY, and TCP keepalive as the options say (off when
// keepalive_idle is 0), on an accepted or outbound socket.
void tune_accepted(int fd, const options& o);

// An outbound connection's socket (engine::connect()): non-blocking,
// close-on-exec, of `to`'s family, tuned as tune_accepted() does; -1 with
// `err` set when the system has none to give.
int open_outbound(const endpoint& to, const options& o, int& err) noexcept;
// `to` as a sockaddr for connect(2); returns its length.
socklen_t sockaddr_of(const endpoint& to, sockaddr_storage& ss) noexcept;
// The close reason of a connect that failed with `err`: refused, timed out
// (the system's own deadline), unreachable, or what close_reason_of says.
std::error_code connect_reason_of(int err) noexcept;

// Turns away an accepted connection (max_connections): closes it with a
// reset (SO_LINGER {on, 0 s}), so the client learns at once and the server
// keeps no TIME_WAIT for it. The IOCP backend refuses the same way.
void refuse(int fd) noexcept;

// A direct write (engine_core::direct_write): what a non-blocking socket
// takes at once of `head` then `body`, gathered in one sendmsg; 0 when it
// takes nothing or fails (the bytes are then queued, and the connection's
// own thread meets the error when it writes them). MSG_NOSIGNAL: the
// caller may be any thread, one that has not blocked SIGPIPE too.
std::size_t send_now(int fd, std::span<const std::byte> head,
                     std::span<const std::byte> body) noexcept;

// What to do after an accept on the listener failed with `err` (an errno
// value), the one rule of both Linux backends.
enum class after_accept_error {
  // EAGAIN: no connection is waiting (a non-blocking accept()).
  drained,
  // EINTR, or ECONNABORTED (a client reset before it was taken, which
  // dequeued it): accept again at once.
  retry,
  // Anything else: a shortage of descriptors or memory (EMFILE, ENFILE,
  // ENOBUFS, ENOMEM), or an error of the listener itself that trying again
  // at once will not cure, while the listener stays readable: EINVAL once
  // it was shut down (shutdown(SHUT_RD)), EPERM or EACCES from a security
  // module or seccomp (the connection stays queued). Accepting pauses
  // until the backend's next tick; retried at once, the loop would spin.
  pause,
};
after_accept_error classify_accept_error(int err) noexcept;

}  // namespace ionet::posix
