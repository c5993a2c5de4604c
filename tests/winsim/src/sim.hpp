// winsim's insides: the handle table, the objects handles name (completion
// ports, events, sockets), the error mappings, the simulated kernel thread
// and the fault schedule. Only tests/winsim/src includes this.
//
// Threads: callers of the Win32 functions (the backend's workers, its
// housekeeper, the user's threads) and one simulated kernel thread, which
// waits on an epoll set of every connected or listening socket and
// completes the pending operations of a socket when Linux says it is ready.
// Every completion is finished (OVERLAPPED written, user buffer filled)
// before its packet is queued under the port's mutex, and a worker takes
// it under the same mutex: what the "kernel" did for an operation happens
// before the worker that dequeues it, as ThreadSanitizer can see.
//
// Lock order: socket -> (another socket: a listener, then its accept
// socket) -> port or events. No simulator lock is held while user code
// runs.
#pragma once

#include <sys/uio.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "mstcpip.h"
#include "mswsock.h"
#include "winsock2.h"
#include "ws2tcpip.h"

namespace winsim {

// --- Handles -----------------------------------------------------------
enum class object_type { port, event, socket };

struct object {
  explicit object(object_type t) : type(t) {}
  virtual ~object() = default;
  const object_type type;
};

// Handle values are multiples of 4 from one table, as Windows' are, and a
// closed handle's value is reused (LIFO), so a stale handle in the backend
// reaches someone else's object here as it would on Windows.
std::uintptr_t add_handle(std::shared_ptr<object> obj);
std::shared_ptr<object> find_handle(std::uintptr_t h, object_type t);
bool remove_handle(std::uintptr_t h, object_type t);

template <class T>
std::shared_ptr<T> find_as(std::uintptr_t h) {
  return std::static_pointer_cast<T>(find_handle(h, T::kind));
}

// --- Errors ----------------------------------------------------------------
// Sets the calling thread's last error and returns `result`.
template <class R>
R fail(DWORD error, R result) {
  SetLastError(error);
  return result;
}
int wsa_from_errno(int e) noexcept;
// OVERLAPPED::Internal holds an NTSTATUS; WSAGetOverlappedResult maps it to
// a Winsock error. The statuses Windows uses for these errors are in a
// table; any other Winsock error travels as a customer-defined status
// (0xE0000000 | error), which Windows itself never produces.
ULONG_PTR status_of(DWORD wsa_error) noexcept;
DWORD wsa_of(ULONG_PTR status) noexcept;
inline constexpr ULONG_PTR status_pending = 0x103;

std::uint64_t now_ms() noexcept;

// --- Faults (faults.cpp) -----------------------------------------------
enum class fault : int {
  // Benign: schedules Windows may choose.
  reorder,      // completions leave the port out of order
  delay,        // a completion becomes visible some ms late
  any_worker,   // a worker takes one packet, so the next goes to another
  inline_pend,  // an operation that could finish at once pends, and vice versa
  // Destructive: opt-in, for targeted tests.
  enobufs_accept,       // AcceptEx fails with WSAENOBUFS
  enobufs_send,         // WSASend fails with WSAENOBUFS
  reset_read,           // a read completes with WSAECONNRESET
  netname_read,         // a read completes with ERROR_NETNAME_DELETED
  wouldblock_io,        // WSASend/WSARecv: WSAEWOULDBLOCK, too many outstanding
  post_fail,            // PostQueuedCompletionStatus fails
  non_ifs,              // a non-IFS LSP: no skip-on-success, no XP1_IFS_HANDLES
  fd_accept_once,       // FD_ACCEPT is not recorded again after the first time
  reset_accept,         // AcceptEx fails with WSAECONNRESET
  update_context_fail,  // setsockopt(SO_UPDATE_ACCEPT_CONTEXT) fails
  netdown_accept,       // AcceptEx pends, then completes with WSAENETDOWN
  // Wine's DisconnectEx: ntdll exports wine_get_version (so the backend
  // knows it is under Wine), and DisconnectEx finishes at once but says
  // ERROR_IO_PENDING, with no packet on a skip-on-success socket. Its rate
  // is how many of those get a packet after all, some ms late (a Wine that
  // fixed it: see disconnect_ex).
  wine_disconnect,
  // ConnectEx: the connect pends, then completes with WSAECONNREFUSED (a
  // reset answered the SYN); fails at once with WSAENETUNREACH (no route);
  // pends and never completes, a SYN dropped again and again, until it is
  // cancelled or its socket closed.
  refuse_connect,
  unreachable_connect,
  silent_connect,
  count
};
// True when the fault's decision for (key, counter) says so.
bool roll(fault f, std::uint64_t key, std::uint64_t counter) noexcept;
// A number in [0, n) for the fault's decision (key, counter).
std::uint64_t pick(fault f, std::uint64_t key, std::uint64_t counter,
                   std::uint64_t n) noexcept;
bool enabled(fault f) noexcept;

// --- Completion ports and events (port.cpp) --------------------------------
struct packet {
  ULONG_PTR key;
  OVERLAPPED* ov;
  DWORD bytes;
  std::uint64_t visible_at;  // ms; later than now under the delay fault
};

struct port final : object {
  static constexpr object_type kind = object_type::port;
  port() : object(kind) {}
  // Queues a packet, visible `late_ms` from now at the earliest; false
  // once the port is closed.
  bool post(ULONG_PTR key, OVERLAPPED* ov, DWORD bytes,
            std::uint64_t late_ms = 0);

  std::mutex m;
  std::condition_variable cv;
  std::deque<packet> queue;
  bool closed = false;
  std::uint64_t serial = 0;
  std::uint64_t posts = 0;  // fault decisions are keyed by this
  std::uint64_t takes = 0;
};

struct event final : object {
  static constexpr object_type kind = object_type::event;
  explicit event(bool manual_reset, bool initial)
      : object(kind), manual(manual_reset), signaled(initial) {}
  const bool manual;
  bool signaled;  // guarded by the events' mutex (port.cpp)
};
void signal(event& e);
void reset(event& e);

// --- Sockets (socket.cpp, io.cpp) ------------------------------------------
struct sim_socket;

// A pending overlapped operation.
struct op {
  enum class kind { recv, recv_ready, send, accept, disconnect, connect } k;
  OVERLAPPED* ov = nullptr;
  std::vector<iovec> iov;  // recv/send: what is left of the user's buffers
  std::size_t done = 0;    // bytes transferred so far
  std::size_t total = 0;
  // accept: the socket that becomes the connection and where the
  // addresses go.
  std::shared_ptr<sim_socket> accept_into;
  char* out = nullptr;
  DWORD local_bytes = 0;
  DWORD remote_bytes = 0;
  std::uint64_t due = 0;  // disconnect: when it completes (ms)
  // connect: the error it completes with whatever Linux says (a fault),
  // or never completes (silent) until cancelled.
  DWORD forced = 0;
  bool silent = false;
};

enum class sock_state {
  fresh,  // made by WSASocketW, or reusable after DisconnectEx
  listening,
  connecting,     // ConnectEx pending
  connected,      // taken by AcceptEx
  disconnecting,  // DisconnectEx pending
  unusable,       // a cancelled DisconnectEx: only closesocket is left
};

struct sim_socket final : object {
  static constexpr object_type kind = object_type::socket;
  sim_socket() : object(kind) {}

  std::mutex m;
  int fd = -1;  // the Linux socket; the same number for the socket's life
  int family = AF_INET;
  SOCKET handle = INVALID_SOCKET;
  std::uint64_t serial = 0;  // never reused: epoll data, fault keys
  sock_state state = sock_state::fresh;
  bool closed = false;
  bool in_epoll = false;
  // Association with a completion port (CreateIoCompletionPort).
  std::shared_ptr<port> cport;
  ULONG_PTR key = 0;
  bool skip_on_success = false;
  bool accepted = false;  // AcceptEx completed on it (SO_UPDATE_ACCEPT_CONTEXT)
  bool bound = false;     // bind succeeded (ConnectEx requires it)
  // Connected by ConnectEx; `connect_context` once SO_UPDATE_CONNECT_CONTEXT
  // was set (getpeername and shutdown fail before).
  bool connected_out = false;
  bool connect_context = false;
  bool fin_sent = false;      // shutdown(SD_SEND) or DisconnectEx sent our FIN
  bool active_close = false;  // our FIN went out before the peer's arrived
  DWORD latched = 0;  // a reset or abort: every later operation fails with it
  std::deque<op> recvs;
  std::deque<op> sends;
  std::deque<op> accepts;  // listener: AcceptEx calls waiting for a client
  std::optional<op> disconnect;
  std::optional<op> connect;  // ConnectEx pending
  // WSAEventSelect.
  std::shared_ptr<event> select_event;
  long select_mask = 0;
  long recorded = 0;  // the network event record
  bool fd_accept_enabled = true;
  std::uint64_t fd_accepts = 0;
  std::uint64_t decisions[static_cast<int>(fault::count)] = {};

  std::uint64_t next_decision(fault f) {
    return decisions[static_cast<int>(f)]++;
  }
};

// Finishes `o`: writes the status and byte count into its OVERLAPPED and
// queues its packet on the socket's port. Runs with s.m held.
void complete(sim_socket& s, op& o, DWORD wsa_error);

// Tries to make progress on every pending operation of `s` (s.m held);
// true if an operation is still waiting. io.cpp.
void progress(sim_socket& s);

// Records FD_ACCEPT if a client waits with no AcceptEx to take it. s.m held.
void check_fd_accept(sim_socket& s);

// Completes s's DisconnectEx if it is due (kernel thread, s.m not held).
void disconnect_due(sim_socket& s);

// The extension functions WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)
// hands out (io.cpp, socket.cpp).
BOOL accept_ex(SOCKET listen_socket, SOCKET accept_socket, PVOID output,
               DWORD receive_bytes, DWORD local_address_bytes,
               DWORD remote_address_bytes, LPDWORD received, LPOVERLAPPED ov);
void get_accept_ex_sockaddrs(PVOID output, DWORD receive_bytes,
                             DWORD local_address_bytes,
                             DWORD remote_address_bytes, sockaddr** local,
                             int* local_length, sockaddr** remote,
                             int* remote_length);
BOOL disconnect_ex(SOCKET s, LPOVERLAPPED ov, DWORD flags, DWORD reserved);
BOOL connect_ex(SOCKET s, const sockaddr* name, int namelen, PVOID send_buffer,
                DWORD send_bytes, LPDWORD sent, LPOVERLAPPED ov);

// Linux's TCP state of a socket (TCP_INFO), -1 if unknown.
int tcp_state(int fd) noexcept;

// --- The simulated kernel thread (kernel.cpp) ----------------------------
// Every socket is findable by serial until closesocket, so an epoll event
// for a socket closed meanwhile finds nothing.
void register_socket(const std::shared_ptr<sim_socket>& s);
void unregister_socket(std::uint64_t serial);
bool started() noexcept;
void kernel_watch(sim_socket& s);    // add s.fd to the epoll set (s.m held)
void kernel_unwatch(sim_socket& s);  // remove it (s.m held)
// Runs progress(s) on the kernel thread soon.
void kernel_kick(const std::shared_ptr<sim_socket>& s);
// Completes s's pending DisconnectEx at `due` (ms).
void kernel_timer(const std::shared_ptr<sim_socket>& s, std::uint64_t due);
void kernel_start();
std::shared_ptr<sim_socket> socket_by_serial(std::uint64_t serial);
std::uint64_t time_wait_ms() noexcept;

}  // namespace winsim
