// winsim: completion ports, events and waits, CloseHandle.
#include <algorithm>
#include <chrono>

#include "sim.hpp"

namespace winsim {
namespace {

std::uint64_t next_port_serial() {
  static std::atomic<std::uint64_t> n{0};
  return ++n;
}

// Events share one mutex and condition variable: WaitForMultipleObjects
// waits for any of several, and there are only a few events.
std::mutex& events_m() {
  static auto* m = new std::mutex;
  return *m;
}
std::condition_variable& events_cv() {
  static auto* cv = new std::condition_variable;
  return *cv;
}

}  // namespace

bool port::post(ULONG_PTR k, OVERLAPPED* ov, DWORD bytes,
                std::uint64_t late_ms) {
  std::lock_guard g(m);
  if (closed) return false;
  const std::uint64_t n = posts++;
  std::uint64_t visible = late_ms ? now_ms() + late_ms : 0;
  // The delay fault: the packet shows up 1-4 ms late, so completions of
  // different connections come out in another order than they happened.
  if (roll(fault::delay, serial, n))
    visible =
        std::max(visible, now_ms() + 1 + pick(fault::delay, serial, n, 4));
  queue.push_back(packet{k, ov, bytes, visible});
  cv.notify_one();
  return true;
}

void signal(event& e) {
  std::lock_guard g(events_m());
  e.signaled = true;
  events_cv().notify_all();
}

void reset(event& e) {
  std::lock_guard g(events_m());
  e.signaled = false;
}

}  // namespace winsim

using namespace winsim;

// CreateIoCompletionPort remarks: with INVALID_HANDLE_VALUE it makes a
// port not yet associated with any file; with a file handle and an
// existing port it associates the file with that port, and the key comes
// with every completion packet of the file.
HANDLE CreateIoCompletionPort(HANDLE file, HANDLE existing, ULONG_PTR key,
                              DWORD) noexcept {
  if (file == INVALID_HANDLE_VALUE) {
    if (existing) return fail(ERROR_INVALID_PARAMETER, HANDLE{nullptr});
    auto p = std::make_shared<port>();
    p->serial = next_port_serial();
    return reinterpret_cast<HANDLE>(add_handle(std::move(p)));
  }
  auto s = find_as<sim_socket>(reinterpret_cast<std::uintptr_t>(file));
  if (!s) return fail(ERROR_INVALID_HANDLE, HANDLE{nullptr});
  auto p = find_as<port>(reinterpret_cast<std::uintptr_t>(existing));
  if (!p) return fail(ERROR_INVALID_PARAMETER, HANDLE{nullptr});
  std::lock_guard g(s->m);
  // "A handle can be associated with only one I/O completion port."
  if (s->cport) return fail(ERROR_INVALID_PARAMETER, HANDLE{nullptr});
  s->cport = std::move(p);
  s->key = key;
  return existing;
}

// GetQueuedCompletionStatusEx: up to `count` packets; waits up to
// `timeout_ms` for the first. On timeout it fails with WAIT_TIMEOUT; once
// the port is closed, waiters fail with ERROR_ABANDONED_WAIT_0. The byte
// count, key and OVERLAPPED of each packet are in its entry; its status is
// in the OVERLAPPED.
BOOL GetQueuedCompletionStatusEx(HANDLE h, LPOVERLAPPED_ENTRY entries,
                                 ULONG count, PULONG removed, DWORD timeout_ms,
                                 BOOL) noexcept {
  auto p = find_as<port>(reinterpret_cast<std::uintptr_t>(h));
  if (!p || !entries || !removed || count == 0) {
    return fail(ERROR_INVALID_PARAMETER, BOOL{FALSE});
  }
  *removed = 0;
  const std::uint64_t deadline =
      timeout_ms == INFINITE ? UINT64_MAX : now_ms() + timeout_ms;
  std::unique_lock g(p->m);
  for (;;) {
    if (p->closed) return fail(ERROR_ABANDONED_WAIT_0, BOOL{FALSE});
    const std::uint64_t now = now_ms();
    std::uint64_t earliest = UINT64_MAX;
    const std::uint64_t t = p->takes++;
    // any_worker: this worker takes one packet, so a batch is spread over
    // the workers rather than handled by one.
    ULONG limit = roll(fault::any_worker, p->serial, t) ? 1 : count;
    while (*removed < limit) {
      // The visible packets; reorder picks any of the first eight.
      std::size_t seen = 0;
      std::size_t chosen = p->queue.size();
      const std::uint64_t choice =
          roll(fault::reorder, p->serial, t * 64 + *removed)
              ? pick(fault::reorder, p->serial, t * 64 + *removed, 8)
              : 0;
      for (std::size_t i = 0; i < p->queue.size() && seen <= choice; ++i) {
        if (p->queue[i].visible_at > now) {
          earliest = std::min(earliest, p->queue[i].visible_at);
          continue;
        }
        chosen = i;
        ++seen;
      }
      if (chosen == p->queue.size()) break;
      const packet pk = p->queue[chosen];
      p->queue.erase(p->queue.begin() + static_cast<std::ptrdiff_t>(chosen));
      OVERLAPPED_ENTRY& e = entries[(*removed)++];
      e.lpCompletionKey = pk.key;
      e.lpOverlapped = pk.ov;
      e.dwNumberOfBytesTransferred = pk.bytes;
      e.Internal = 0;  // reserved; the status is in the OVERLAPPED
    }
    if (*removed > 0) {
      if (!p->queue.empty()) p->cv.notify_one();  // more for another worker
      return TRUE;
    }
    if (now >= deadline) return fail(WAIT_TIMEOUT, BOOL{FALSE});
    const std::uint64_t until = std::min(deadline, earliest);
    if (until == UINT64_MAX) {
      p->cv.wait(g);
    } else {
      p->cv.wait_for(g, std::chrono::milliseconds(until - now));
    }
  }
}

// PostQueuedCompletionStatus: queues a packet no I/O produced; the
// OVERLAPPED is passed through untouched.
BOOL PostQueuedCompletionStatus(HANDLE h, DWORD bytes, ULONG_PTR key,
                                LPOVERLAPPED ov) noexcept {
  auto p = find_as<port>(reinterpret_cast<std::uintptr_t>(h));
  if (!p) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  {
    std::lock_guard g(p->m);
    if (roll(fault::post_fail, p->serial, p->posts)) {
      ++p->posts;
      return fail(ERROR_NO_SYSTEM_RESOURCES, BOOL{FALSE});
    }
  }
  if (!p->post(key, ov, bytes)) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  return TRUE;
}

HANDLE CreateEventW(LPSECURITY_ATTRIBUTES, BOOL manual_reset,
                    BOOL initial_state, LPCWSTR name) noexcept {
  if (name)
    return fail(ERROR_INVALID_PARAMETER, HANDLE{nullptr});  // unnamed only
  auto e =
      std::make_shared<event>(manual_reset != FALSE, initial_state != FALSE);
  return reinterpret_cast<HANDLE>(add_handle(std::move(e)));
}

BOOL SetEvent(HANDLE h) noexcept {
  auto e = find_as<event>(reinterpret_cast<std::uintptr_t>(h));
  if (!e) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  signal(*e);
  return TRUE;
}

BOOL ResetEvent(HANDLE h) noexcept {
  auto e = find_as<event>(reinterpret_cast<std::uintptr_t>(h));
  if (!e) return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
  reset(*e);
  return TRUE;
}

// WaitForMultipleObjects with bWaitAll FALSE: the lowest index among the
// signaled objects; an auto-reset event is reset by the wait it satisfies.
// Only events can be waited for here.
DWORD WaitForMultipleObjects(DWORD count, const HANDLE* handles, BOOL wait_all,
                             DWORD timeout_ms) noexcept {
  if (wait_all || count == 0 || !handles)
    return fail(ERROR_INVALID_PARAMETER, WAIT_FAILED);
  std::vector<std::shared_ptr<event>> events;
  for (DWORD i = 0; i < count; ++i) {
    auto e = find_as<event>(reinterpret_cast<std::uintptr_t>(handles[i]));
    if (!e) return fail(ERROR_INVALID_HANDLE, WAIT_FAILED);
    events.push_back(std::move(e));
  }
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(timeout_ms == INFINITE ? 0 : timeout_ms);
  std::unique_lock g(events_m());
  for (;;) {
    for (DWORD i = 0; i < count; ++i) {
      if (events[i]->signaled) {
        if (!events[i]->manual) events[i]->signaled = false;
        return WAIT_OBJECT_0 + i;
      }
    }
    if (timeout_ms == INFINITE) {
      events_cv().wait(g);
    } else if (events_cv().wait_until(g, deadline) == std::cv_status::timeout) {
      bool any = false;
      for (auto& e : events) any = any || e->signaled;
      if (!any) return WAIT_TIMEOUT;
    }
  }
}

DWORD WaitForSingleObject(HANDLE h, DWORD timeout_ms) noexcept {
  return WaitForMultipleObjects(1, &h, FALSE, timeout_ms);
}

WSAEVENT WSACreateEvent() noexcept {
  // WSACreateEvent remarks: manual reset, initially nonsignaled.
  return CreateEventW(nullptr, TRUE, FALSE, nullptr);
}
BOOL WSACloseEvent(WSAEVENT e) noexcept { return CloseHandle(e); }
BOOL WSASetEvent(WSAEVENT e) noexcept { return SetEvent(e); }
BOOL WSAResetEvent(WSAEVENT e) noexcept { return ResetEvent(e); }

BOOL CloseHandle(HANDLE h) noexcept {
  const auto v = reinterpret_cast<std::uintptr_t>(h);
  if (auto p = find_as<port>(v)) {
    {
      std::lock_guard g(p->m);
      p->closed = true;
      p->queue.clear();
    }
    p->cv.notify_all();
    remove_handle(v, object_type::port);
    return TRUE;
  }
  if (remove_handle(v, object_type::event)) return TRUE;
  // CloseHandle on a socket is not how Winsock closes one (closesocket
  // remarks), so it is refused here rather than half-done.
  return fail(ERROR_INVALID_HANDLE, BOOL{FALSE});
}
