// winsim: the handle table, last-error, the errno/NTSTATUS/Winsock error
// mappings, time, SRW locks, modules and WSAStartup.
#include <cerrno>
#include <chrono>
#include <cstring>
#include <shared_mutex>
#include <thread>

#include "sim.hpp"

namespace winsim {
namespace {

struct handle_table {
  std::shared_mutex m;
  std::vector<std::shared_ptr<object>> slots;
  std::vector<std::size_t> free;  // LIFO: a closed value comes back first
};

handle_table& table() {
  static auto* t = new handle_table;  // never destroyed: threads outlive main
  return *t;
}

std::size_t index_of(std::uintptr_t h) { return h / 4 - 1; }

}  // namespace

std::uintptr_t add_handle(std::shared_ptr<object> obj) {
  handle_table& t = table();
  std::unique_lock g(t.m);
  std::size_t i;
  if (!t.free.empty()) {
    i = t.free.back();
    t.free.pop_back();
    t.slots[i] = std::move(obj);
  } else {
    i = t.slots.size();
    t.slots.push_back(std::move(obj));
  }
  return (i + 1) * 4;
}

std::shared_ptr<object> find_handle(std::uintptr_t h, object_type type) {
  if (h == 0 || h % 4 != 0) return nullptr;
  handle_table& t = table();
  std::shared_lock g(t.m);
  const std::size_t i = index_of(h);
  if (i >= t.slots.size() || !t.slots[i] || t.slots[i]->type != type)
    return nullptr;
  return t.slots[i];
}

bool remove_handle(std::uintptr_t h, object_type type) {
  if (h == 0 || h % 4 != 0) return false;
  handle_table& t = table();
  std::unique_lock g(t.m);
  const std::size_t i = index_of(h);
  if (i >= t.slots.size() || !t.slots[i] || t.slots[i]->type != type)
    return false;
  t.slots[i].reset();
  t.free.push_back(i);
  return true;
}

int wsa_from_errno(int e) noexcept {
  switch (e) {
    case 0:
      return 0;
    case EAGAIN:
      return WSAEWOULDBLOCK;
    case EINTR:
      return WSAEINTR;
    case EBADF:
    case ENOTSOCK:
      return WSAENOTSOCK;
    case EACCES:
    case EPERM:
      return WSAEACCES;
    case EFAULT:
      return WSAEFAULT;
    case EINVAL:
      return WSAEINVAL;
    case EMFILE:
    case ENFILE:
      return WSAEMFILE;
    case EINPROGRESS:
      return WSAEINPROGRESS;
    case EALREADY:
      return WSAEALREADY;
    case EMSGSIZE:
      return WSAEMSGSIZE;
    case ENOPROTOOPT:
      return WSAENOPROTOOPT;
    case EPROTONOSUPPORT:
      return WSAEPROTONOSUPPORT;
    case EOPNOTSUPP:
      return WSAEOPNOTSUPP;
    case EAFNOSUPPORT:
      return WSAEAFNOSUPPORT;
    case EADDRINUSE:
      return WSAEADDRINUSE;
    case EADDRNOTAVAIL:
      return WSAEADDRNOTAVAIL;
    case ENETDOWN:
      return WSAENETDOWN;
    case ENETUNREACH:
      return WSAENETUNREACH;
    case ENETRESET:
      return WSAENETRESET;
    case ECONNABORTED:
      return WSAECONNABORTED;
    case ECONNRESET:
      return WSAECONNRESET;
    case ENOBUFS:
    case ENOMEM:
      return WSAENOBUFS;
    case EISCONN:
      return WSAEISCONN;
    case ENOTCONN:
      return WSAENOTCONN;
    case ESHUTDOWN:
      return WSAESHUTDOWN;
    case ETIMEDOUT:
      return WSAETIMEDOUT;
    case ECONNREFUSED:
      return WSAECONNREFUSED;
    case EHOSTUNREACH:
      return WSAEHOSTUNREACH;
    default:
      return WSASYSCALLFAILURE;
  }
}

namespace {

// The NTSTATUS values Windows completes socket operations with, and the
// Winsock error WSAGetOverlappedResult turns each into.
struct status_pair {
  ULONG_PTR status;
  DWORD wsa;
};
constexpr status_pair statuses[] = {
    {0xC0000120, WSA_OPERATION_ABORTED},  // STATUS_CANCELLED
    {0xC000020D, WSAECONNRESET},          // STATUS_CONNECTION_RESET
    {0xC0000241, WSAECONNABORTED},        // STATUS_CONNECTION_ABORTED
    {0xC000013B, WSAECONNABORTED},        // STATUS_LOCAL_DISCONNECT
    {0xC000009A, WSAENOBUFS},             // STATUS_INSUFFICIENT_RESOURCES
    {0xC0000008, WSAENOTSOCK},            // STATUS_INVALID_HANDLE
    {0xC000020C, WSAENOTCONN},            // STATUS_CONNECTION_DISCONNECTED
    {0xC0000236, WSAECONNREFUSED},        // STATUS_CONNECTION_REFUSED
    {0xC000023C, WSAENETUNREACH},         // STATUS_NETWORK_UNREACHABLE
    {0xC000023D, WSAEHOSTUNREACH},        // STATUS_HOST_UNREACHABLE
    {0xC00000B5, WSAETIMEDOUT},           // STATUS_IO_TIMEOUT
};
constexpr ULONG_PTR customer_status = 0xE0000000;

}  // namespace

ULONG_PTR status_of(DWORD wsa_error) noexcept {
  if (wsa_error == 0) return 0;
  for (const auto& p : statuses) {
    if (p.wsa == wsa_error) return p.status;
  }
  return customer_status | wsa_error;
}

DWORD wsa_of(ULONG_PTR status) noexcept {
  if (status == 0) return 0;
  for (const auto& p : statuses) {
    if (p.status == status) return p.wsa;
  }
  if ((status & 0xF0000000) == customer_status) return status & 0x0FFFFFFF;
  return WSASYSCALLFAILURE;
}

std::uint64_t now_ms() noexcept {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(
      duration_cast<milliseconds>(steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace winsim

using namespace winsim;

namespace {
// GetLastError and WSAGetLastError read the same per-thread value, as on
// Windows (WSAGetLastError remarks: it is GetLastError for the thread).
thread_local DWORD last_error = 0;
}  // namespace

DWORD GetLastError() noexcept { return last_error; }
void SetLastError(DWORD error) noexcept { last_error = error; }
int WSAGetLastError() noexcept { return static_cast<int>(last_error); }
void WSASetLastError(int error) noexcept {
  last_error = static_cast<DWORD>(error);
}

ULONGLONG GetTickCount64() noexcept { return now_ms(); }
DWORD GetTickCount() noexcept { return static_cast<DWORD>(now_ms()); }
void Sleep(DWORD ms) noexcept {
  if (ms == 0) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
}
DWORD GetCurrentThreadId() noexcept {
  return static_cast<DWORD>(
      std::hash<std::thread::id>{}(std::this_thread::get_id()));
}

void AcquireSRWLockExclusive(PSRWLOCK lock) noexcept {
  pthread_mutex_lock(&lock->m);
}
void ReleaseSRWLockExclusive(PSRWLOCK lock) noexcept {
  pthread_mutex_unlock(&lock->m);
}
// Shared mode is exclusive here: allowed by the contract (a shared owner
// may have to wait), and nothing the backend does depends on sharing.
void AcquireSRWLockShared(PSRWLOCK lock) noexcept {
  pthread_mutex_lock(&lock->m);
}
void ReleaseSRWLockShared(PSRWLOCK lock) noexcept {
  pthread_mutex_unlock(&lock->m);
}
BOOL TryAcquireSRWLockExclusive(PSRWLOCK lock) noexcept {
  return pthread_mutex_trylock(&lock->m) == 0;
}

namespace {
int module_ntdll;
int module_ws2;

// Wine's ntdll export, under the wine_disconnect fault.
const char* wine_get_version() { return "winsim"; }

bool same(LPCWSTR a, const char* b) {
  for (; *a && *b; ++a, ++b) {
    wchar_t x = *a;
    char y = *b;
    if (x >= L'A' && x <= L'Z') x = x - L'A' + L'a';
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != static_cast<wchar_t>(y)) return false;
  }
  return *a == 0 && *b == 0;
}
}  // namespace

HMODULE GetModuleHandleW(LPCWSTR name) noexcept {
  if (name && same(name, "ntdll.dll")) return &module_ntdll;
  if (name && same(name, "ws2_32.dll")) return &module_ws2;
  return fail(ERROR_INVALID_HANDLE /* ERROR_MOD_NOT_FOUND */, HMODULE{nullptr});
}

FARPROC GetProcAddress(HMODULE module, LPCSTR name) noexcept {
  // Nothing is exported by name here: in particular not Wine's
  // wine_get_version, so running_under_wine() is false. Under the
  // wine_disconnect fault ntdll exports it, as Wine's does (unless Wine
  // Staging hides it), and the backend takes its Wine paths.
  if (enabled(fault::wine_disconnect) && module == &module_ntdll && name &&
      std::strcmp(name, "wine_get_version") == 0) {
    return reinterpret_cast<FARPROC>(&wine_get_version);
  }
  return fail(ERROR_NOT_FOUND, FARPROC{nullptr});
}

int WSAStartup(WORD version, LPWSADATA data) noexcept {
  if (!data) return WSAEFAULT;
  std::memset(data, 0, sizeof *data);
  data->wVersion = version;
  data->wHighVersion = MAKEWORD(2, 2);
  std::strcpy(data->szDescription, "winsim");
  std::strcpy(data->szSystemStatus, "Running");
  kernel_start();
  return 0;
}

int WSACleanup() noexcept { return 0; }
