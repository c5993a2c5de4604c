// CPU time of the whole test process (every thread, user and kernel): how
// the IOCP tests tell an engine that waits from one that spins.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(_WIN32)
#include <windows.h>
#else
#include <sys/resource.h>
#endif

namespace ionet_test {

// CPU time (user + kernel) of this process so far.
inline std::chrono::milliseconds process_cpu() {
#if !defined(_WIN32)
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return t.tv_sec * 1000 + t.tv_usec / 1000; };
  return std::chrono::milliseconds(ms(u.ru_utime) + ms(u.ru_stime));
#else
  FILETIME created, exited, kernel, user;
  GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user);
  auto ticks = [](const FILETIME& f) {
    return (static_cast<std::uint64_t>(f.dwHighDateTime) << 32) |
           f.dwLowDateTime;
  };
  return std::chrono::milliseconds((ticks(kernel) + ticks(user)) / 10000);
#endif
}

}  // namespace ionet_test
