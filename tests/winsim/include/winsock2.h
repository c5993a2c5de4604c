// winsim: the subset of <winsock2.h> the IOCP backend calls.
//
// Why Linux's socket types: the backend handles sockaddr, sockaddr_in(6),
// sockaddr_storage, in6_addr, linger and the IPPROTO_* / SOL_SOCKET /
// SO_* / TCP_NODELAY / IPV6_V6ONLY constants exactly as Winsock declares
// them (same names, same layouts for everything it touches), so the
// simulator reuses Linux's definitions instead of declaring a second set
// that would clash with them in any file that includes both. The
// constants are then Linux's values; the simulator interprets them (its
// setsockopt knows SOL_SOCKET means Linux's SOL_SOCKET), and defines with
// Windows' values only the options Linux lacks (SO_EXCLUSIVEADDRUSE,
// SO_UPDATE_ACCEPT_CONTEXT, SO_PROTOCOL_INFOW), chosen not to collide.
//
// Why SOCKET is its own integer type: Winsock's bind, listen, setsockopt,
// getsockname, shutdown ... take a SOCKET (UINT_PTR) where Linux's take an
// int. With SOCKET an unsigned pointer-sized integer, a call passing a
// SOCKET is an exact match for the simulator's C++ overload and needs a
// conversion for Linux's, so overload resolution picks the simulator's
// without any macro renaming (which would also rename Linux's). A SOCKET
// is a simulator handle (like a Windows handle value, a multiple of 4),
// never a Linux file descriptor.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "windows.h"

using SOCKET = std::uintptr_t;
static_assert(sizeof(SOCKET) == sizeof(void*) && static_cast<SOCKET>(-1) > 0,
              "SOCKET is Winsock's UINT_PTR");
#define INVALID_SOCKET (~static_cast<SOCKET>(0))
#define SOCKET_ERROR (-1)
using GROUP = unsigned int;
using u_long = unsigned long;
using u_short = unsigned short;

// --- Winsock errors (winerror.h) ---------------------------------------
#define WSA_IO_PENDING ERROR_IO_PENDING
#define WSA_IO_INCOMPLETE ERROR_IO_INCOMPLETE
#define WSA_OPERATION_ABORTED ERROR_OPERATION_ABORTED
#define WSA_INVALID_HANDLE ERROR_INVALID_HANDLE
#define WSA_INVALID_PARAMETER ERROR_INVALID_PARAMETER
#define WSA_NOT_ENOUGH_MEMORY ERROR_NOT_ENOUGH_MEMORY
#define WSAEINTR 10004
#define WSAEBADF 10009
#define WSAEACCES 10013
#define WSAEFAULT 10014
#define WSAEINVAL 10022
#define WSAEMFILE 10024
#define WSAEWOULDBLOCK 10035
#define WSAEINPROGRESS 10036
#define WSAEALREADY 10037
#define WSAENOTSOCK 10038
#define WSAEDESTADDRREQ 10039
#define WSAEMSGSIZE 10040
#define WSAEPROTOTYPE 10041
#define WSAENOPROTOOPT 10042
#define WSAEPROTONOSUPPORT 10043
#define WSAEOPNOTSUPP 10045
#define WSAEAFNOSUPPORT 10047
#define WSAEADDRINUSE 10048
#define WSAEADDRNOTAVAIL 10049
#define WSAENETDOWN 10050
#define WSAENETUNREACH 10051
#define WSAENETRESET 10052
#define WSAECONNABORTED 10053
#define WSAECONNRESET 10054
#define WSAENOBUFS 10055
#define WSAEISCONN 10056
#define WSAENOTCONN 10057
#define WSAESHUTDOWN 10058
#define WSAETIMEDOUT 10060
#define WSAECONNREFUSED 10061
#define WSAEHOSTUNREACH 10065
#define WSANOTINITIALISED 10093
#define WSAEDISCON 10101
#define WSASYSCALLFAILURE 10107

int WSAGetLastError() noexcept;
void WSASetLastError(int error) noexcept;

// --- Start-up -------------------------------------------------------------
struct WSADATA {
  WORD wVersion;
  WORD wHighVersion;
  unsigned short iMaxSockets;
  unsigned short iMaxUdpDg;
  char* lpVendorInfo;
  char szDescription[257];
  char szSystemStatus[129];
};
using LPWSADATA = WSADATA*;
int WSAStartup(WORD version, LPWSADATA data) noexcept;
int WSACleanup() noexcept;

// --- Protocol information (what a provider says about itself) -------------
#define XP1_IFS_HANDLES 0x00020000
#define WSAPROTOCOL_LEN 255
#define MAX_PROTOCOL_CHAIN 7
#define BASE_PROTOCOL 1
#define LAYERED_PROTOCOL 0
struct WSAPROTOCOLCHAIN {
  int ChainLen;  // 0: layered, 1: base provider, > 1: a chain (an LSP)
  DWORD ChainEntries[MAX_PROTOCOL_CHAIN];
};
struct WSAPROTOCOL_INFOW {
  DWORD dwServiceFlags1;
  DWORD dwServiceFlags2;
  DWORD dwServiceFlags3;
  DWORD dwServiceFlags4;
  DWORD dwProviderFlags;
  GUID ProviderId;
  DWORD dwCatalogEntryId;
  WSAPROTOCOLCHAIN ProtocolChain;
  int iVersion;
  int iAddressFamily;
  int iMaxSockAddr;
  int iMinSockAddr;
  int iSocketType;
  int iProtocol;
  int iProtocolMaxOffset;
  int iNetworkByteOrder;
  int iSecurityScheme;
  DWORD dwMessageSize;
  DWORD dwProviderReserved;
  WCHAR szProtocol[WSAPROTOCOL_LEN + 1];
};
using LPWSAPROTOCOL_INFOW = WSAPROTOCOL_INFOW*;
int WSAEnumProtocolsW(int* protocols, LPWSAPROTOCOL_INFOW buffer,
                      LPDWORD buffer_length) noexcept;
#define WSAEnumProtocols WSAEnumProtocolsW
using WSAPROTOCOL_INFO = WSAPROTOCOL_INFOW;

// --- Sockets ----------------------------------------------------------------
#define WSA_FLAG_OVERLAPPED 0x01
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80
SOCKET WSASocketW(int af, int type, int protocol, LPWSAPROTOCOL_INFOW info,
                  GROUP g, DWORD flags) noexcept;
int closesocket(SOCKET s) noexcept;
int bind(SOCKET s, const sockaddr* name, int namelen) noexcept;
int listen(SOCKET s, int backlog) noexcept;
int getsockname(SOCKET s, sockaddr* name, int* namelen) noexcept;
int getpeername(SOCKET s, sockaddr* name, int* namelen) noexcept;
int setsockopt(SOCKET s, int level, int optname, const char* optval,
               int optlen) noexcept;
int getsockopt(SOCKET s, int level, int optname, char* optval,
               int* optlen) noexcept;

#define SD_RECEIVE 0
#define SD_SEND 1
#define SD_BOTH 2
int shutdown(SOCKET s, int how) noexcept;

// SOL_SOCKET options Linux lacks, with Windows' values (none is a Linux
// SOL_SOCKET option number).
#define SO_EXCLUSIVEADDRUSE (static_cast<int>(~SO_REUSEADDR))
#define SO_PROTOCOL_INFOW 0x2005
#define SO_PROTOCOL_INFO SO_PROTOCOL_INFOW

// --- Overlapped send and receive ----------------------------------------
struct WSABUF {
  ULONG len;
  CHAR* buf;
};
using LPWSABUF = WSABUF*;
using LPWSAOVERLAPPED = OVERLAPPED*;
using WSAOVERLAPPED = OVERLAPPED;
using LPWSAOVERLAPPED_COMPLETION_ROUTINE = void (*)(DWORD error, DWORD bytes,
                                                    LPWSAOVERLAPPED ov,
                                                    DWORD flags);
int WSARecv(SOCKET s, LPWSABUF buffers, DWORD count, LPDWORD received,
            LPDWORD flags, LPWSAOVERLAPPED ov,
            LPWSAOVERLAPPED_COMPLETION_ROUTINE routine) noexcept;
int WSASend(SOCKET s, LPWSABUF buffers, DWORD count, LPDWORD sent, DWORD flags,
            LPWSAOVERLAPPED ov,
            LPWSAOVERLAPPED_COMPLETION_ROUTINE routine) noexcept;
BOOL WSAGetOverlappedResult(SOCKET s, LPWSAOVERLAPPED ov, LPDWORD bytes,
                            BOOL wait, LPDWORD flags) noexcept;

// --- Network events -----------------------------------------------------
using WSAEVENT = HANDLE;
#define WSA_INVALID_EVENT (static_cast<WSAEVENT>(nullptr))
#define FD_READ_BIT 0
#define FD_WRITE_BIT 1
#define FD_OOB_BIT 2
#define FD_ACCEPT_BIT 3
#define FD_CONNECT_BIT 4
#define FD_CLOSE_BIT 5
#define FD_MAX_EVENTS 10
#define FD_READ (1 << FD_READ_BIT)
#define FD_WRITE (1 << FD_WRITE_BIT)
#define FD_OOB (1 << FD_OOB_BIT)
#define FD_ACCEPT (1 << FD_ACCEPT_BIT)
#define FD_CONNECT (1 << FD_CONNECT_BIT)
#define FD_CLOSE (1 << FD_CLOSE_BIT)
struct WSANETWORKEVENTS {
  long lNetworkEvents;
  int iErrorCode[FD_MAX_EVENTS];
};
using LPWSANETWORKEVENTS = WSANETWORKEVENTS*;
WSAEVENT WSACreateEvent() noexcept;
BOOL WSACloseEvent(WSAEVENT event) noexcept;
BOOL WSASetEvent(WSAEVENT event) noexcept;
BOOL WSAResetEvent(WSAEVENT event) noexcept;
int WSAEventSelect(SOCKET s, WSAEVENT event, long network_events) noexcept;
int WSAEnumNetworkEvents(SOCKET s, WSAEVENT event,
                         LPWSANETWORKEVENTS network_events) noexcept;

// --- WSAIoctl -------------------------------------------------------------
#define IOC_VOID 0x20000000
#define IOC_OUT 0x40000000
#define IOC_IN 0x80000000
#define IOC_INOUT (IOC_IN | IOC_OUT)
#define IOC_WS2 0x08000000
#define IOC_VENDOR 0x18000000
#define _WSAIORW(x, y) (IOC_INOUT | (x) | (y))
#define _WSAIOW(x, y) (IOC_IN | (x) | (y))
#define SIO_GET_EXTENSION_FUNCTION_POINTER _WSAIORW(IOC_WS2, 6)
int WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD in_bytes, LPVOID out,
             DWORD out_bytes, LPDWORD returned, LPWSAOVERLAPPED ov,
             LPWSAOVERLAPPED_COMPLETION_ROUTINE routine) noexcept;
