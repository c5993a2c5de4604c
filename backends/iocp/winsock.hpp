// Winsock for the IOCP backend: the one place that includes the Windows
// headers (with WIN32_LEAN_AND_MEAN and NOMINMAX, in the order Winsock
// needs), the extension functions that exist only as pointers fetched from
// a socket (AcceptEx, GetAcceptExSockaddrs, DisconnectEx, ConnectEx), and the
// mapping of Winsock errors onto ionet's close reasons.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
// winsock2.h must come before windows.h: kept in this order by hand.
// clang-format off
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <mstcpip.h>
// clang-format on

#include <optional>
#include <string>
#include <system_error>

#include "backends/iocp/platform.hpp"
#include "ionet/events.hpp"
#include "ionet/options.hpp"

namespace ionet::iocp {

// Extension functions: the same for every socket of one provider, so they
// are fetched once, from the listening socket (or, in an engine that does
// not listen, from a socket made for the purpose).
struct extensions {
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs = nullptr;
  LPFN_DISCONNECTEX disconnect_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;
};

// WSAStartup once per process; the error if Winsock is absent.
std::error_code winsock_init() noexcept;

// Fills `ext` from socket `s`; the error names the function that is missing.
std::error_code load_extensions(SOCKET s, extensions& ext, std::string& which);

// Whether the provider at the top of `s`'s protocol chain hands out real
// kernel (IFS) handles. A non-IFS layered service provider (some firewalls
// and antivirus products install one) can drop the completion packet of an
// operation on a socket in FILE_SKIP_COMPLETION_PORT_ON_SUCCESS mode
// (Microsoft KB2568167), so such sockets must not use the mode. Asked
// through SO_PROTOCOL_INFOW (XP1_IFS_HANDLES), as libuv does; false when it
// cannot be asked.
bool provider_is_ifs(SOCKET s) noexcept;

// An overlapped TCP socket of the family, or INVALID_SOCKET (WSAGetLastError).
SOCKET open_tcp_socket(int family) noexcept;

// Errors that mean "the system is short of resources right now", not that
// the connection failed: the operation is tried again later.
// WSAEWOULDBLOCK from an overlapped WSASend/WSARecv means too many
// outstanding overlapped requests (Microsoft's WSASend and WSARecv
// remarks); WSAENOBUFS, that no buffer space (locked pages) is left.
inline bool is_resource_shortage(int error) noexcept {
  return error == WSAENOBUFS || error == WSAEWOULDBLOCK || error == WSAEMFILE ||
         error == ERROR_NOT_ENOUGH_MEMORY || error == ERROR_NO_SYSTEM_RESOURCES;
}

// A failed AcceptEx (the call or its completion) that was one client's:
// AcceptEx's WSAECONNRESET, "an incoming connection was indicated, but was
// subsequently terminated by the remote peer prior to accepting the call"
// (ERROR_NETNAME_DELETED is the same reset as the port's status). The
// accept pool posts again at once. Any other failure, a shortage or one of
// the network or the listener that lasts (WSAENETDOWN, WSAEINVAL,
// WSAEACCES), pauses posting for a backoff: posted again at once, it would
// fail again at once, and the pool would spin its workers on the port.
inline bool is_accept_reset(int error) noexcept {
  return error == WSAECONNRESET || error == ERROR_NETNAME_DELETED;
}

// Winsock error as a std::error_code in the system category (Windows error
// numbers, so message() is the system's text).
inline std::error_code wsa_error(int code) noexcept {
  return {code, std::system_category()};
}

// The close reason for a failed operation: a reset for what the peer or
// the network did, the native error otherwise.
std::error_code close_reason_of(DWORD error) noexcept;

// The close reason of a ConnectEx that failed (the call, or its
// completion): connection_refused, connect_timeout, host_unreachable, or
// what close_reason_of() says. Both spellings of each: the Winsock error
// (WSAGetOverlappedResult, or the call) and the Windows error that
// GetQueuedCompletionStatus/GetOverlappedResult report for the same
// NTSTATUS (ERROR_CONNECTION_REFUSED, ERROR_NETWORK_UNREACHABLE,
// ERROR_HOST_UNREACHABLE, ERROR_SEM_TIMEOUT).
std::error_code connect_reason_of(DWORD error) noexcept;

// Binds `s` to the wildcard address of `family`, port 0: ConnectEx
// requires a bound socket (WSAEINVAL otherwise). 0, or the Winsock error.
int bind_any(SOCKET s, int family) noexcept;

// TCP keepalive as the options say (SIO_KEEPALIVE_VALS: idle and interval;
// the probe count is the system's).
void set_keepalive(SOCKET s, const options& o) noexcept;

// sockaddr <-> endpoint.
endpoint endpoint_of(const sockaddr* sa) noexcept;
int to_sockaddr(const endpoint& ep, sockaddr_storage& ss) noexcept;
// A connected socket's address, ours (`local`) or its peer's; nullopt
// when the system cannot tell.
std::optional<endpoint> address_of(SOCKET s, bool local) noexcept;

// The error a completion carries: 0 on success. `ov` must be the
// OVERLAPPED of an operation issued on `s`. Also returns the byte count,
// which must be taken from here (not from the issuing call) for an
// operation that completed at once: Wine may report 0 there (WINE.md).
DWORD overlapped_result(SOCKET s, OVERLAPPED* ov, DWORD& bytes) noexcept;

}  // namespace ionet::iocp
