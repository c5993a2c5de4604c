// winsim: the simulated kernel. One thread waits on an epoll set holding
// every listening and connected socket (edge-triggered: an operation is
// always tried when it is issued, so only a socket that said "would block"
// has something to wait for) and runs progress() on a socket when Linux
// says it is ready, when an operation was left pending on purpose (a kick),
// or when a DisconnectEx comes due.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>
#include <unordered_map>

#include "sim.hpp"

namespace winsim {
namespace {

struct kernel {
  int ep = -1;
  int wake = -1;  // eventfd; epoll data 0
  std::mutex m;   // kicks and timers
  std::vector<std::shared_ptr<sim_socket>> kicks;
  std::multimap<std::uint64_t, std::weak_ptr<sim_socket>> timers;
  std::mutex sockets_m;
  std::unordered_map<std::uint64_t, std::weak_ptr<sim_socket>> sockets;
};

kernel& k() {
  static auto* state = new kernel;  // never destroyed: its thread runs to exit
  return *state;
}

std::atomic<bool> running{false};

void wake_up() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(k().wake, &one, sizeof one);
}

void run() {
  kernel& kn = k();
  epoll_event events[256];
  std::vector<std::shared_ptr<sim_socket>> kicks;
  std::vector<std::shared_ptr<sim_socket>> due;
  for (;;) {
    int timeout = 1000;
    {
      std::lock_guard g(kn.m);
      if (!kn.kicks.empty()) {
        timeout = 0;
      } else if (!kn.timers.empty()) {
        const std::uint64_t now = now_ms();
        const std::uint64_t at = kn.timers.begin()->first;
        timeout =
            at <= now
                ? 0
                : static_cast<int>(std::min<std::uint64_t>(at - now, 1000));
      }
    }
    const int n = ::epoll_wait(kn.ep, events, 256, timeout);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == 0) {
        std::uint64_t v;
        [[maybe_unused]] const ssize_t r = ::read(kn.wake, &v, sizeof v);
        continue;
      }
      if (auto s = socket_by_serial(events[i].data.u64)) {
        std::lock_guard g(s->m);
        progress(*s);
      }
    }
    {
      std::lock_guard g(kn.m);
      kicks.swap(kn.kicks);
      const std::uint64_t now = now_ms();
      while (!kn.timers.empty() && kn.timers.begin()->first <= now) {
        if (auto s = kn.timers.begin()->second.lock())
          due.push_back(std::move(s));
        kn.timers.erase(kn.timers.begin());
      }
    }
    for (auto& s : kicks) {
      std::lock_guard g(s->m);
      progress(*s);
    }
    kicks.clear();
    for (auto& s : due) disconnect_due(*s);
    due.clear();
  }
}

}  // namespace

void kernel_start() {
  static std::once_flag once;
  std::call_once(once, [] {
    kernel& kn = k();
    kn.ep = ::epoll_create1(EPOLL_CLOEXEC);
    kn.wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kn.ep < 0 || kn.wake < 0) {
      std::perror("winsim: epoll/eventfd");
      std::abort();
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    ::epoll_ctl(kn.ep, EPOLL_CTL_ADD, kn.wake, &ev);
    std::thread(run).detach();
    running.store(true);
  });
}

bool started() noexcept { return running.load(); }

void kernel_watch(sim_socket& s) {
  if (s.in_epoll) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = s.serial;
  if (::epoll_ctl(k().ep, EPOLL_CTL_ADD, s.fd, &ev) == 0) s.in_epoll = true;
}

void kernel_unwatch(sim_socket& s) {
  if (!s.in_epoll) return;
  ::epoll_ctl(k().ep, EPOLL_CTL_DEL, s.fd, nullptr);
  s.in_epoll = false;
}

void kernel_kick(const std::shared_ptr<sim_socket>& s) {
  {
    std::lock_guard g(k().m);
    k().kicks.push_back(s);
  }
  wake_up();
}

void kernel_timer(const std::shared_ptr<sim_socket>& s, std::uint64_t due) {
  {
    std::lock_guard g(k().m);
    k().timers.emplace(due, s);
  }
  wake_up();
}

void register_socket(const std::shared_ptr<sim_socket>& s) {
  std::lock_guard g(k().sockets_m);
  k().sockets[s->serial] = s;
}

void unregister_socket(std::uint64_t serial) {
  std::lock_guard g(k().sockets_m);
  k().sockets.erase(serial);
}

std::shared_ptr<sim_socket> socket_by_serial(std::uint64_t serial) {
  std::lock_guard g(k().sockets_m);
  auto it = k().sockets.find(serial);
  return it == k().sockets.end() ? nullptr : it->second.lock();
}

// DisconnectEx remarks: after TF_REUSE_SOCKET on a connection we closed
// first, the socket is not reusable until TIME_WAIT has passed; Windows'
// default TIME_WAIT is 2 MSL = 120 s (TcpTimedWaitDelay).
std::uint64_t time_wait_ms() noexcept {
  static const std::uint64_t ms = [] {
    const char* v = std::getenv("IONET_WINSIM_TIME_WAIT_MS");
    return v && *v ? std::strtoull(v, nullptr, 10) : 120000ull;
  }();
  return ms;
}

}  // namespace winsim
