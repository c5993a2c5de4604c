// POSIX socket helpers shared by the Linux backends (libuv, io_uring): the
// listening socket with the errors users should see, and peer addresses.
#pragma once

#include <cstdint>

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

// The peer's address of a connected socket (an empty endpoint on error).
endpoint peer_of(int fd);

// TCP_NODELAY, and TCP keepalive as the options say (off when
// keepalive_idle is 0), on an accepted socket.
void tune_accepted(int fd, const options& o);

// Turns away an accepted connection (max_connections): closes it with a
// reset (SO_LINGER {on, 0 s}), so the client learns at once and the server
// keeps no TIME_WAIT for it. The IOCP backend refuses the same way.
void refuse(int fd) noexcept;

}  // namespace ionet::posix
