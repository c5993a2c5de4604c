// The completion port: one per engine, every socket associated with it,
// every worker waiting on it. A small RAII owner of the HANDLE.
#pragma once

#include <cstddef>
#include <span>
#include <system_error>

#include "backends/iocp/winsock.hpp"

namespace ionet::iocp {

class completion_port {
 public:
  completion_port() = default;
  ~completion_port() { close(); }
  completion_port(const completion_port&) = delete;
  completion_port& operator=(const completion_port&) = delete;

  // `concurrency`: threads the kernel lets run at once (0: one per CPU).
  std::error_code open(DWORD concurrency) noexcept {
    close();
    handle_ =
        CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, concurrency);
    if (!handle_)
      return {static_cast<int>(GetLastError()), std::system_category()};
    return {};
  }
  void close() noexcept {
    if (handle_) CloseHandle(handle_);
    handle_ = nullptr;
  }

  // Completions of operations on `s` come to this port. Key 0: workers find
  // everything they need through the OVERLAPPED.
  std::error_code add(SOCKET s) noexcept {
    if (!CreateIoCompletionPort(reinterpret_cast<HANDLE>(s), handle_, 0, 0)) {
      return {static_cast<int>(GetLastError()), std::system_category()};
    }
    return {};
  }

  // Queues a packet that no I/O produced (a hand-off to a worker).
  bool post(ULONG_PTR key, OVERLAPPED* ov, DWORD bytes = 0) noexcept {
    return PostQueuedCompletionStatus(handle_, bytes, key, ov) != FALSE;
  }

  // Up to out.size() completions; waits up to `timeout_ms` for the first.
  // Returns how many (0 on timeout).
  std::size_t get_many(std::span<OVERLAPPED_ENTRY> out,
                       DWORD timeout_ms) noexcept {
    ULONG n = 0;
    if (!GetQueuedCompletionStatusEx(handle_, out.data(),
                                     static_cast<ULONG>(out.size()), &n,
                                     timeout_ms, FALSE)) {
      return 0;
    }
    return n;
  }

  HANDLE handle() const noexcept { return handle_; }

 private:
  HANDLE handle_ = nullptr;
};

}  // namespace ionet::iocp
