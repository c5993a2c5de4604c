// winsim: the subset of <windows.h> the IOCP backend calls, simulated on
// Linux as Microsoft documents it (tests/winsim/README.md says what is
// modelled and what is not). Only the backend's sources and the simulator
// include these headers; they are never installed.
//
// Types keep their Windows names and widths (DWORD is 32 bits, ULONG_PTR
// and HANDLE pointer-sized). Functions are declared with C++ linkage: the
// socket functions in winsock2.h overload Linux's by taking SOCKET, which
// only works for C++ declarations (one overload set may hold at most one
// extern "C" function per name).
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>

// --- Base types ------------------------------------------------------------
using BYTE = std::uint8_t;
using WORD = std::uint16_t;
using DWORD = std::uint32_t;
using LONG = std::int32_t;
using ULONG = std::uint32_t;
using USHORT = std::uint16_t;
using INT = int;
using UINT = unsigned int;
using BOOL = int;
using CHAR = char;
using WCHAR = wchar_t;
using LONG_PTR = std::intptr_t;
using ULONG_PTR = std::uintptr_t;
using DWORD_PTR = ULONG_PTR;
using ULONGLONG = std::uint64_t;
using PVOID = void*;
using LPVOID = void*;
using HANDLE = void*;
using HMODULE = void*;
using FARPROC = void (*)();
using LPDWORD = DWORD*;
using PULONG = ULONG*;
using LPCSTR = const char*;
using LPCWSTR = const wchar_t*;
using LPWSTR = wchar_t*;
using NTSTATUS = LONG;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#define WINAPI
#define CALLBACK
#define PASCAL

#define MAKEWORD(lo, hi)                             \
  static_cast<WORD>((static_cast<WORD>(lo) & 0xff) | \
                    ((static_cast<WORD>(hi) & 0xff) << 8))

#define INVALID_HANDLE_VALUE \
  (reinterpret_cast<HANDLE>(static_cast<LONG_PTR>(-1)))
#define INFINITE 0xFFFFFFFFu

struct GUID {
  std::uint32_t Data1;
  std::uint16_t Data2;
  std::uint16_t Data3;
  std::uint8_t Data4[8];
};
using LPGUID = GUID*;

// --- Errors (winerror.h) --------------------------------------------------
#define ERROR_SUCCESS 0L
#define ERROR_INVALID_FUNCTION 1L
#define ERROR_INVALID_HANDLE 6L
#define ERROR_NOT_ENOUGH_MEMORY 8L
#define ERROR_NETNAME_DELETED 64L
#define ERROR_SEM_TIMEOUT 121L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_OPERATION_ABORTED 995L
#define ERROR_IO_INCOMPLETE 996L
#define ERROR_IO_PENDING 997L
#define ERROR_NOT_FOUND 1168L
#define ERROR_CONNECTION_REFUSED 1225L
#define ERROR_NETWORK_UNREACHABLE 1231L
#define ERROR_HOST_UNREACHABLE 1232L
#define ERROR_CONNECTION_ABORTED 1236L
#define ERROR_NO_SYSTEM_RESOURCES 1450L
#define ERROR_ABANDONED_WAIT_0 735L
#define WAIT_OBJECT_0 0u
#define WAIT_TIMEOUT 258u
#define WAIT_FAILED 0xFFFFFFFFu

DWORD GetLastError() noexcept;
void SetLastError(DWORD error) noexcept;

// --- Overlapped I/O and completion ports (minwinbase.h, ioapiset.h) ---------
// Windows puts the offsets in an anonymous struct (a compiler extension);
// here they are a named member. Sockets ignore them.
struct OVERLAPPED_OFFSETS {
  DWORD Offset;
  DWORD OffsetHigh;
};
struct OVERLAPPED {
  ULONG_PTR Internal;      // the NTSTATUS: STATUS_PENDING (0x103) until done
  ULONG_PTR InternalHigh;  // bytes transferred
  union {
    OVERLAPPED_OFFSETS offsets;
    PVOID Pointer;
  };
  HANDLE hEvent;
};
using LPOVERLAPPED = OVERLAPPED*;

struct OVERLAPPED_ENTRY {
  ULONG_PTR lpCompletionKey;
  LPOVERLAPPED lpOverlapped;
  ULONG_PTR Internal;
  DWORD dwNumberOfBytesTransferred;
};
using LPOVERLAPPED_ENTRY = OVERLAPPED_ENTRY*;

HANDLE CreateIoCompletionPort(HANDLE file, HANDLE existing_port, ULONG_PTR key,
                              DWORD concurrency) noexcept;
BOOL GetQueuedCompletionStatusEx(HANDLE port, LPOVERLAPPED_ENTRY entries,
                                 ULONG count, PULONG removed, DWORD timeout_ms,
                                 BOOL alertable) noexcept;
BOOL PostQueuedCompletionStatus(HANDLE port, DWORD bytes, ULONG_PTR key,
                                LPOVERLAPPED ov) noexcept;
BOOL CancelIoEx(HANDLE file, LPOVERLAPPED ov) noexcept;
BOOL CloseHandle(HANDLE h) noexcept;

#define FILE_SKIP_COMPLETION_PORT_ON_SUCCESS 0x1
#define FILE_SKIP_SET_EVENT_ON_HANDLE 0x2
BOOL SetFileCompletionNotificationModes(HANDLE file, BYTE flags) noexcept;

// --- Events and waits (synchapi.h) ------------------------------------------
struct SECURITY_ATTRIBUTES;
using LPSECURITY_ATTRIBUTES = SECURITY_ATTRIBUTES*;
HANDLE CreateEventW(LPSECURITY_ATTRIBUTES attributes, BOOL manual_reset,
                    BOOL initial_state, LPCWSTR name) noexcept;
BOOL SetEvent(HANDLE event) noexcept;
BOOL ResetEvent(HANDLE event) noexcept;
DWORD WaitForMultipleObjects(DWORD count, const HANDLE* handles, BOOL wait_all,
                             DWORD timeout_ms) noexcept;
DWORD WaitForSingleObject(HANDLE h, DWORD timeout_ms) noexcept;
void Sleep(DWORD ms) noexcept;

// A slim reader/writer lock. Windows makes it pointer-sized; here it wraps
// a pthread mutex so that ThreadSanitizer knows it as a lock (its reports
// then name the lock, and lock-order inversions are found). Like SRWLOCK,
// it is not recursive and needs no destruction.
struct SRWLOCK {
  pthread_mutex_t m;
};
using PSRWLOCK = SRWLOCK*;
#define SRWLOCK_INIT \
  { PTHREAD_MUTEX_INITIALIZER }
void AcquireSRWLockExclusive(PSRWLOCK lock) noexcept;
void ReleaseSRWLockExclusive(PSRWLOCK lock) noexcept;
void AcquireSRWLockShared(PSRWLOCK lock) noexcept;
void ReleaseSRWLockShared(PSRWLOCK lock) noexcept;
BOOL TryAcquireSRWLockExclusive(PSRWLOCK lock) noexcept;

// --- Time, modules -----------------------------------------------------------
ULONGLONG GetTickCount64() noexcept;
DWORD GetTickCount() noexcept;
// ntdll.dll and ws2_32.dll "exist"; GetProcAddress finds none of Wine's
// exports (wine_get_version), so the backend knows it is not under Wine,
// unless the wine_disconnect fault is on (then ntdll has wine_get_version).
HMODULE GetModuleHandleW(LPCWSTR name) noexcept;
FARPROC GetProcAddress(HMODULE module, LPCSTR name) noexcept;
DWORD GetCurrentThreadId() noexcept;
