#include "load/worker.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

namespace ionet_bench {
namespace {

constexpr std::size_t max_error_samples = 8;
constexpr std::size_t read_buffer_bytes = 256 * 1024;
constexpr int reads_per_event = 4;  // then let other connections run
constexpr std::int64_t ns_per_s = 1'000'000'000;

std::int64_t seconds_to_ns(double s) { return static_cast<std::int64_t>(s * 1e9); }

}  // namespace

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct worker::conn {
  int fd = -1;
  std::uint32_t id = 0;  // global connection number: part of the pattern
  enum class state : std::uint8_t { idle, connecting, open, dead } st = state::idle;
  bool want_out = false;  // EPOLLOUT registered
  std::vector<std::uint8_t> out;  // bytes not yet written
  std::size_t out_off = 0;
  std::uint64_t next_msg = 0;   // messages queued so far
  std::uint64_t recv_bytes = 0; // stream bytes echoed back so far
  std::vector<std::int64_t> sent_at;  // ring of `inflight` send times
};

worker::worker(const load_config& cfg, const pattern& pat, load_clock& clock,
               std::vector<std::uint32_t> conn_ids)
    : cfg_(cfg), pat_(pat), clock_(clock), conns_(conn_ids.size()),
      rbuf_(read_buffer_bytes) {
  header_bytes_ = cfg.length_prefix ? 4 : 0;
  frame_bytes_ = header_bytes_ + cfg.size;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conns_[i].id = conn_ids[i];
    conns_[i].sent_at.assign(cfg.inflight, 0);
  }
}

worker::~worker() {
  for (conn& c : conns_) {
    if (c.fd >= 0) ::close(c.fd);
  }
  if (epfd_ >= 0) ::close(epfd_);
}

void worker::fail(conn& c, const std::string& what, bool connect_failure) {
  if (connect_failure) {
    ++result.connect_failures;
    --connecting_;
  } else {
    ++result.errors;
  }
  trouble.fetch_add(1, std::memory_order_relaxed);
  if (result.error_samples.size() < max_error_samples) {
    result.error_samples.push_back("connection " + std::to_string(c.id) + ": " + what);
  }
  if (c.st == conn::state::open) connected.fetch_sub(1, std::memory_order_relaxed);
  if (c.fd >= 0) ::close(c.fd);  // also removes it from the epoll set
  c.fd = -1;
  c.st = conn::state::dead;
}

void worker::open_all() {
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn& c = conns_[i];
    c.st = conn::state::connecting;
    ++connecting_;
    c.fd = ::socket(cfg_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      fail(c, std::string("socket: ") + std::strerror(errno), true);
      continue;
    }
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&cfg_.addr), cfg_.addr_len) != 0 &&
        errno != EINPROGRESS) {
      fail(c, std::string("connect: ") + std::strerror(errno), true);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.u64 = i;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
      fail(c, std::string("epoll_ctl: ") + std::strerror(errno), true);
      continue;
    }
    c.want_out = true;
  }
}

void worker::set_interest(conn& c, bool want_out) {
  if (c.want_out == want_out) return;
  epoll_event ev{};
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
  ev.data.u64 = static_cast<std::uint64_t>(&c - conns_.data());
  if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) {
    fail(c, std::string("epoll_ctl: ") + std::strerror(errno), false);
    return;
  }
  c.want_out = want_out;
}

bool worker::sending_allowed(std::int64_t now) const noexcept {
  const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
  return end == 0 || now < end;
}

void worker::queue_message(conn& c, std::int64_t now) {
  const std::uint64_t m = c.next_msg++;
  c.sent_at[m % cfg_.inflight] = now;
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
  }
  const std::size_t at = c.out.size();
  c.out.resize(at + frame_bytes_);
  std::uint8_t* p = c.out.data() + at;
  if (cfg_.length_prefix) {
    p[0] = static_cast<std::uint8_t>(cfg_.size >> 24);
    p[1] = static_cast<std::uint8_t>(cfg_.size >> 16);
    p[2] = static_cast<std::uint8_t>(cfg_.size >> 8);
    p[3] = static_cast<std::uint8_t>(cfg_.size);
  }
  pat_.fill(c.id, m, 0, p + header_bytes_, cfg_.size);
}

void worker::flush(conn& c) {
  while (c.st == conn::state::open && c.out_off < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                             MSG_NOSIGNAL);
    if (n > 0) {
      c.out_off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_interest(c, true);
      return;
    }
    fail(c, std::string("send: ") + std::strerror(errno), false);
    return;
  }
  if (c.st != conn::state::open) return;
  c.out.clear();
  c.out_off = 0;
  set_interest(c, false);
}

void worker::on_connected(conn& c, std::int64_t now) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    fail(c, std::string("connect: ") + std::strerror(err), true);
    return;
  }
  c.st = conn::state::open;
  --connecting_;
  ++result.connected;
  connected.fetch_add(1, std::memory_order_relaxed);
  if (sending_allowed(now)) {
    for (std::uint32_t k = 0; k < cfg_.inflight; ++k) queue_message(c, now);
  }
  flush(c);
}

void worker::complete(conn& c, std::uint64_t msg, std::int64_t now) {
  completed.fetch_add(1, std::memory_order_relaxed);
  const std::int64_t begin = clock_.measure_begin.load(std::memory_order_relaxed);
  const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
  if (begin != 0 && now >= begin && now < end) {
    ++result.messages;
    result.bytes += cfg_.size;
    result.latency.add(static_cast<std::uint64_t>(now - c.sent_at[msg % cfg_.inflight]));
  }
  if (sending_allowed(now)) queue_message(c, now);
}

// The echoed stream must equal the sent stream byte for byte: raw echoes
// come back split anywhere, and length_prefix echoes carry the same header
// we sent, so one check covers both.
void worker::consume(conn& c, const std::uint8_t* data, std::size_t n, std::int64_t now) {
  while (n > 0) {
    const std::uint64_t m = c.recv_bytes / frame_bytes_;
    const std::size_t pos = static_cast<std::size_t>(c.recv_bytes % frame_bytes_);
    if (m >= c.next_msg) {
      result.corrupted += n;
      trouble.fetch_add(1, std::memory_order_relaxed);
      fail(c, std::to_string(n) + " bytes echoed beyond what was sent", false);
      return;
    }
    const std::size_t take = std::min(n, frame_bytes_ - pos);
    std::size_t bad = 0;
    std::size_t i = 0;
    for (; i < take && pos + i < header_bytes_; ++i) {
      const std::uint8_t want = static_cast<std::uint8_t>(cfg_.size >> (8 * (3 - (pos + i))));
      bad += data[i] != want;
    }
    if (i < take) bad += pat_.mismatches(c.id, m, pos + i - header_bytes_, data + i, take - i);
    if (bad != 0) {
      result.corrupted += bad;
      trouble.fetch_add(bad, std::memory_order_relaxed);
    }
    c.recv_bytes += take;
    data += take;
    n -= take;
    if (pos + take == frame_bytes_) complete(c, m, now);
  }
}

void worker::on_readable(conn& c) {
  for (int r = 0; r < reads_per_event && c.st == conn::state::open; ++r) {
    const ssize_t n = ::recv(c.fd, rbuf_.data(), rbuf_.size(), 0);
    if (n > 0) {
      consume(c, rbuf_.data(), static_cast<std::size_t>(n), now_ns());
      if (static_cast<std::size_t>(n) < rbuf_.size()) break;
      continue;
    }
    if (n == 0) {
      fail(c, "closed by the server", false);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    fail(c, std::string("recv: ") + std::strerror(errno), false);
    return;
  }
  flush(c);
}

void worker::on_event(conn& c, std::uint32_t events, std::int64_t now) {
  if (c.st == conn::state::connecting) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, now);
    return;
  }
  if (c.st != conn::state::open) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) on_readable(c);
  if (c.st == conn::state::open && (events & EPOLLOUT)) flush(c);
}

void worker::check_connect_phase(std::int64_t now) {
  if (connect_phase_done.load(std::memory_order_relaxed)) return;
  if (connecting_ > 0 && now < started_ + seconds_to_ns(cfg_.connect_timeout_s)) return;
  for (conn& c : conns_) {
    if (c.st == conn::state::connecting) fail(c, "connect timed out", true);
  }
  connect_phase_done.store(true, std::memory_order_release);
}

void worker::check_stalls(std::int64_t now) {
  for (conn& c : conns_) {
    if (c.st != conn::state::open) continue;
    const std::uint64_t oldest = c.recv_bytes / frame_bytes_;
    if (oldest >= c.next_msg) continue;
    const std::int64_t waited = now - c.sent_at[oldest % cfg_.inflight];
    if (waited < seconds_to_ns(cfg_.stall_s)) continue;
    ++result.stalled;
    trouble.fetch_add(1, std::memory_order_relaxed);
    if (result.error_samples.size() < max_error_samples) {
      const std::uint64_t missing = c.next_msg * frame_bytes_ - c.recv_bytes;
      result.error_samples.push_back(
          "connection " + std::to_string(c.id) + ": stalled, no echo for " +
          std::to_string(waited / 1'000'000) + " ms, " + std::to_string(missing) +
          " bytes outstanding");
    }
  }
}

void worker::run() {
  started_ = now_ns();
  // However the main thread behaves, stop by then.
  const std::int64_t hard_deadline =
      started_ + seconds_to_ns(cfg_.connect_timeout_s + cfg_.warmup_s + cfg_.duration_s) +
      30 * ns_per_s;
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) {
    ++result.errors;
    result.error_samples.push_back(std::string("epoll_create1: ") + std::strerror(errno));
    trouble.fetch_add(1, std::memory_order_relaxed);
    connect_phase_done.store(true, std::memory_order_release);
    return;
  }
  open_all();
  std::vector<epoll_event> events(512);
  for (;;) {
    std::int64_t now = now_ns();
    check_connect_phase(now);
    const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
    if (clock_.abort.load(std::memory_order_relaxed) || now >= hard_deadline ||
        (end != 0 && now >= end)) {
      check_stalls(now);
      break;
    }
    std::int64_t wait_ns = 100'000'000;
    if (end != 0) wait_ns = std::min(wait_ns, end - now);
    const int timeout_ms = static_cast<int>((wait_ns + 999'999) / 1'000'000);
    const int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      ++result.errors;
      result.error_samples.push_back(std::string("epoll_wait: ") + std::strerror(errno));
      trouble.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    now = now_ns();
    for (int i = 0; i < n; ++i) {
      on_event(conns_[events[static_cast<std::size_t>(i)].data.u64],
               events[static_cast<std::size_t>(i)].events, now);
    }
  }
  connect_phase_done.store(true, std::memory_order_release);
}

}  // namespace ionet_bench
