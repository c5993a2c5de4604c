#include "load/worker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

namespace ionet_bench {
namespace {

constexpr std::size_t max_error_samples = 8;
constexpr std::size_t read_buffer_bytes = std::size_t{256} * 1024;
constexpr int reads_per_event = 4;  // then let other connections run
constexpr std::size_t events_per_wait = 512;
constexpr std::size_t connects_per_batch = 64;
constexpr std::int64_t ns_per_s = 1'000'000'000;
// The longest epoll wait: how late the worker notices a flag of the main
// thread (finish, probe, abort).
constexpr std::int64_t max_wait_ns = 100'000'000;
// An open-loop send later than this after its intended time is "late".
constexpr std::int64_t late_after_ns = 1'000'000;
// Open loop: the timer slack of the worker thread. The default 50 us would
// let every wake-up, and so every send, be up to 50 us late, and that lag
// is charged to the server as latency; 1 us costs a few more wake-ups.
constexpr unsigned long open_loop_timer_slack_ns = 1'000;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

std::int64_t seconds_to_ns(double s) {
  return static_cast<std::int64_t>(s * 1e9);
}

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::system_category().message(err);
}

}  // namespace

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct worker::conn {
  int fd = -1;
  std::uint32_t id = 0;  // global connection number: part of the pattern
  enum class state : std::uint8_t {
    idle,
    connecting,
    open,
    dead
  } st = state::idle;
  bool want_out = false;          // EPOLLOUT registered
  std::vector<std::uint8_t> out;  // bytes not yet written
  std::size_t out_off = 0;
  std::uint64_t next_msg = 0;    // messages queued so far
  std::uint64_t recv_bytes = 0;  // stream bytes echoed back so far
  // Ring of `inflight` send times; in open loop the intended ones.
  std::vector<std::int64_t> sent_at;
  std::int64_t connect_started = 0;
  std::uint64_t next_slot = 0;  // open loop: schedule slots passed so far
};

worker::worker(const load_config& cfg, const pattern& pat, load_clock& clock,
               std::vector<std::uint32_t> conn_ids)
    : cfg_(cfg),
      pat_(pat),
      clock_(clock),
      conns_(conn_ids.size()),
      rbuf_(read_buffer_bytes),
      events_(events_per_wait) {
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

// Keeps the first sample of each kind of error: a thousand "connection
// refused" would otherwise hide the one "closed by the server".
void worker::add_sample(const std::string& text, const std::string& kind) {
  if (result.error_samples.size() >= max_error_samples) return;
  for (const std::string& s : result.error_samples) {
    if (s.size() >= kind.size() &&
        s.compare(s.size() - kind.size(), kind.size(), kind) == 0) {
      return;
    }
  }
  result.error_samples.push_back(text);
}

void worker::note_error(const std::string& what) {
  ++result.errors;
  trouble.fetch_add(1, std::memory_order_relaxed);
  add_sample(what, what);
}

void worker::fail(conn& c, const std::string& what, bool connect_failure) {
  if (connect_failure) {
    ++result.connect_failures;
    connect_failed.fetch_add(1, std::memory_order_relaxed);
  } else {
    ++result.errors;
  }
  if (c.st == conn::state::connecting) --connecting_;
  trouble.fetch_add(1, std::memory_order_relaxed);
  add_sample("connection " + std::to_string(c.id) + ": " + what, what);
  if (c.st == conn::state::open)
    connected.fetch_sub(1, std::memory_order_relaxed);
  if (c.fd >= 0) ::close(c.fd);  // also removes it from the epoll set
  c.fd = -1;
  c.st = conn::state::dead;
}

// Connects are paced: thousands of SYNs at once overflow the server's
// listen backlog, and each dropped one is retried only after the kernel's
// 1 s SYN timeout, which would measure that timeout, not the server. They
// are also started in small batches between epoll waits, so a connect's
// time does not include starting a thousand others before we look.
// True when more could start at once.
bool worker::start_connects(std::int64_t now) {
  if (connect_phase_done.load(std::memory_order_relaxed)) return false;
  if (now >= started_ + seconds_to_ns(cfg_.connect_timeout_s)) return false;
  for (std::size_t batch = 0; batch < connects_per_batch; ++batch) {
    if (next_open_ == conns_.size() || connecting_ >= cfg_.connect_inflight)
      return false;
    open_one(conns_[next_open_++]);
  }
  return next_open_ < conns_.size() && connecting_ < cfg_.connect_inflight;
}

void worker::open_one(conn& c) {
  c.st = conn::state::connecting;
  ++connecting_;
  c.fd = ::socket(cfg_.addr.ss_family,
                  SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) {
    fail(c, errno_text("socket", errno), true);
    return;
  }
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg_.source_addresses > 0 && !bind_source(c)) return;
  c.connect_started = now_ns();
  if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&cfg_.addr),
                cfg_.addr_len) != 0 &&
      errno != EINPROGRESS) {
    fail(c, errno_text("connect", errno), true);
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLOUT | EPOLLIN;
  ev.data.u64 = static_cast<std::uint64_t>(&c - conns_.data());
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
    fail(c, errno_text("epoll_ctl", errno), true);
    return;
  }
  c.want_out = true;
}

// One source address has one ephemeral port range (about 28,000 ports) per
// destination; spreading connections over 127.0.0.2.. multiplies that.
bool worker::bind_source(conn& c) {
  // IP_BIND_ADDRESS_NO_PORT: the port is picked at connect() from the
  // whole 4-tuple, as for an unbound socket. A plain bind() to port 0
  // would reserve the port on that address for every destination.
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_port = 0;
  src.sin_addr.s_addr =
      htonl((127u << 24) | (2u + c.id % cfg_.source_addresses));
  if (::bind(c.fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0) {
    const int err = errno;
    char text[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &src.sin_addr, text, sizeof text);
    fail(c,
         std::string("bind ") + text + ": " +
             std::system_category().message(err),
         true);
    return false;
  }
  return true;
}

void worker::set_interest(conn& c, bool want_out) {
  if (c.want_out == want_out) return;
  epoll_event ev{};
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
  ev.data.u64 = static_cast<std::uint64_t>(&c - conns_.data());
  if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) {
    fail(c, errno_text("epoll_ctl", errno), false);
    return;
  }
  c.want_out = want_out;
}

bool worker::sending_allowed(std::int64_t now) const noexcept {
  const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
  return end == 0 || now < end;
}

void worker::queue_message(conn& c, std::int64_t sent_at) {
  const std::uint64_t m = c.next_msg++;
  c.sent_at[m % cfg_.inflight] = sent_at;
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
    const ssize_t n = ::send(c.fd, c.out.data() + c.out_off,
                             c.out.size() - c.out_off, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_interest(c, true);
      return;
    }
    fail(c, errno_text("send", errno), false);
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
    fail(c, errno_text("connect", err), true);
    return;
  }
  c.st = conn::state::open;
  --connecting_;
  ++result.connected;
  connected.fetch_add(1, std::memory_order_relaxed);
  result.connect_latency.add(static_cast<std::uint64_t>(
      std::max<std::int64_t>(0, now - c.connect_started)));
  const bool closed_loop = cfg_.mode == load_mode::echo && cfg_.rate <= 0;
  if (closed_loop && sending_allowed(now)) {
    for (std::uint32_t k = 0; k < cfg_.inflight; ++k) queue_message(c, now);
  }
  flush(c);  // also drops EPOLLOUT interest when nothing is queued
}

void worker::complete(conn& c, std::uint64_t msg, std::int64_t now) {
  completed.fetch_add(1, std::memory_order_relaxed);
  if (cfg_.mode == load_mode::idle) {
    ++result.echoed;
    return;
  }
  const std::int64_t begin =
      clock_.measure_begin.load(std::memory_order_relaxed);
  const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
  if (begin != 0 && now >= begin && now < end) {
    ++result.messages;
    result.bytes += cfg_.size;
    result.latency.add(
        static_cast<std::uint64_t>(now - c.sent_at[msg % cfg_.inflight]));
  }
  if (cfg_.rate <= 0 && sending_allowed(now)) queue_message(c, now);
}

// The echoed stream must equal the sent stream byte for byte: raw echoes
// come back split anywhere, and length_prefix echoes carry the same header
// we sent, so one check covers both.
void worker::consume(conn& c, const std::uint8_t* data, std::size_t n,
                     std::int64_t now) {
  while (n > 0) {
    const std::uint64_t m = c.recv_bytes / frame_bytes_;
    const std::size_t pos =
        static_cast<std::size_t>(c.recv_bytes % frame_bytes_);
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
      const std::uint8_t want =
          static_cast<std::uint8_t>(cfg_.size >> (8 * (3 - (pos + i))));
      bad += data[i] != want;
    }
    if (i < take)
      bad +=
          pat_.mismatches(c.id, m, pos + i - header_bytes_, data + i, take - i);
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
    fail(c, errno_text("recv", errno), false);
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
  const bool settled = connecting_ == 0 && next_open_ == conns_.size();
  if (!settled && now < started_ + seconds_to_ns(cfg_.connect_timeout_s))
    return;
  for (conn& c : conns_) {
    if (c.st == conn::state::connecting) {
      fail(c, "connect timed out", true);
    } else if (c.st == conn::state::idle) {
      fail(c, "connect not tried within --connect-timeout", true);
    }
  }
  next_open_ = conns_.size();
  result.connect_done_at = now;
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
          std::to_string(waited / 1'000'000) + " ms, " +
          std::to_string(missing) + " bytes outstanding");
    }
  }
}

// Open loop. Message g of the whole run, g = id + k * connections for the
// k-th slot of connection `id`, is due at schedule_start + g / rate: each
// connection sends at rate / connections, and the connections' first slots
// are spread evenly over one period. This worker's connections all share
// that period and never change order, so the next due slot is always the
// cursor's: no heap.
std::int64_t worker::intended_time(const conn& c) const noexcept {
  const double g =
      static_cast<double>(c.id) +
      static_cast<double>(c.next_slot) * static_cast<double>(cfg_.connections);
  return schedule_start_ + std::llround(g * ns_per_msg_);
}

// Sends what is due by `now` and returns when the next send is due. A slot
// whose connection already has `inflight` messages outstanding is skipped,
// not postponed: the schedule stays fixed and the skip is reported.
std::int64_t worker::run_schedule(std::int64_t now) {
  if (conns_.empty()) return never;
  const std::int64_t begin =
      clock_.measure_begin.load(std::memory_order_relaxed);
  const std::int64_t end = clock_.measure_end.load(std::memory_order_relaxed);
  // After a stall many slots may be due at once; do a bounded batch, then
  // read echoes before coming back (the caller then waits 0).
  for (std::size_t budget = 2 * conns_.size() + 64; budget > 0; --budget) {
    conn& c = conns_[cursor_];
    const std::int64_t due = intended_time(c);
    if (due >= end) return never;  // the schedule is over
    if (due > now) return due;
    ++c.next_slot;
    cursor_ = cursor_ + 1 == conns_.size() ? 0 : cursor_ + 1;
    if (c.st != conn::state::open) continue;
    const bool counted = due >= begin;
    const std::uint64_t outstanding = c.next_msg - c.recv_bytes / frame_bytes_;
    if (outstanding >= cfg_.inflight) {
      late_or_skipped.fetch_add(1, std::memory_order_relaxed);
      if (counted) ++result.skipped_sends;
      continue;
    }
    const std::int64_t lag = now - due;
    if (lag > late_after_ns)
      late_or_skipped.fetch_add(1, std::memory_order_relaxed);
    if (counted) {
      ++result.sends;
      if (lag > late_after_ns) ++result.late_sends;
      result.send_lag.add(static_cast<std::uint64_t>(lag));
    }
    queue_message(c, due);
    flush(c);
    now = now_ns();
  }
  return now;
}

// Idle mode, after the hold: one message on every open connection, then
// wait for all echoes or --stall-timeout. Returns true when that is over.
bool worker::run_idle(std::int64_t now, std::int64_t& wake) {
  if (!probed_) {
    if (!clock_.probe.load(std::memory_order_acquire)) return false;
    probed_ = true;
    result.open_after_hold = connected.load(std::memory_order_relaxed);
    probe_deadline_ = now + seconds_to_ns(cfg_.stall_s);
    for (conn& c : conns_) {
      if (c.st != conn::state::open) continue;
      queue_message(c, now);
      flush(c);
    }
  }
  const bool waiting =
      std::any_of(conns_.begin(), conns_.end(), [this](const conn& c) {
        return c.st == conn::state::open &&
               c.recv_bytes < c.next_msg * frame_bytes_;
      });
  if (!waiting) return true;
  if (now >= probe_deadline_) {
    check_stalls(now);
    return true;
  }
  wake = std::min(wake, probe_deadline_);
  return false;
}

// Waits for socket events until `wake` at the latest and handles them.
// False on an epoll error the loop cannot go on after.
bool worker::wait_events(std::int64_t now, std::int64_t wake) {
  const std::int64_t wait =
      std::clamp<std::int64_t>(wake - now, 0, max_wait_ns);
  const int cap = static_cast<int>(events_.size());
  int n = 0;
  if (have_pwait2_) {
    // Nanosecond timeouts: open-loop sends are due every few microseconds.
    const timespec ts{static_cast<time_t>(wait / ns_per_s),
                      static_cast<long>(wait % ns_per_s)};
    n = ::epoll_pwait2(epfd_, events_.data(), cap, &ts, nullptr);
    if (n < 0 && errno == ENOSYS) {  // before Linux 5.11
      have_pwait2_ = false;
      return true;
    }
  } else {
    // Whole milliseconds, rounded up: sends may then be up to 1 ms late.
    n = ::epoll_wait(epfd_, events_.data(), cap,
                     static_cast<int>((wait + 999'999) / 1'000'000));
  }
  if (n < 0) {
    if (errno == EINTR) return true;
    note_error(errno_text("epoll_wait", errno));
    return false;
  }
  now = now_ns();
  for (int i = 0; i < n; ++i) {
    const epoll_event& e = events_[static_cast<std::size_t>(i)];
    on_event(conns_[e.data.u64], e.events, now);
    // A full batch of echoes takes milliseconds to read; sends falling due
    // meanwhile go out between them rather than late after the batch.
    if (next_due_ != never && (i & 7) == 7) {
      now = now_ns();
      if (now >= next_due_) next_due_ = run_schedule(now);
    }
  }
  return true;
}

void worker::close_all() {
  for (conn& c : conns_) {
    if (c.st == conn::state::open)
      connected.fetch_sub(1, std::memory_order_relaxed);
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.st = conn::state::dead;
  }
}

void worker::run() {
  started_ = now_ns();
  // However the main thread behaves, stop by then.
  double budget_s = cfg_.connect_timeout_s + 30;
  if (cfg_.mode == load_mode::echo) budget_s += cfg_.warmup_s + cfg_.duration_s;
  if (cfg_.mode == load_mode::idle) budget_s += cfg_.hold_s + cfg_.stall_s;
  const std::int64_t hard_deadline = started_ + seconds_to_ns(budget_s);
  const std::int64_t connect_deadline =
      started_ + seconds_to_ns(cfg_.connect_timeout_s);
  const bool open_loop = cfg_.mode == load_mode::echo && cfg_.rate > 0;
  if (open_loop) {
    ns_per_msg_ = 1e9 / cfg_.rate;
    ::prctl(PR_SET_TIMERSLACK, open_loop_timer_slack_ns, 0, 0, 0);
  }
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) {
    note_error(errno_text("epoll_create1", errno));
    connect_phase_done.store(true, std::memory_order_release);
    finished.store(true, std::memory_order_release);
    return;
  }
  for (;;) {
    const std::int64_t now = now_ns();
    const bool more_connects = start_connects(now);
    check_connect_phase(now);
    if (clock_.abort.load(std::memory_order_relaxed) || now >= hard_deadline) {
      check_stalls(now);
      break;
    }
    std::int64_t wake = more_connects ? now : now + max_wait_ns;
    if (!connect_phase_done.load(std::memory_order_relaxed)) {
      wake = std::min(wake, connect_deadline);
    }
    bool over = false;
    if (cfg_.mode == load_mode::echo) {
      const std::int64_t end =
          clock_.measure_end.load(std::memory_order_relaxed);
      if (end != 0 && now >= end) {
        check_stalls(now);
        over = true;
      } else if (end != 0) {
        wake = std::min(wake, end);
      }
      if (!over && open_loop) {
        if (schedule_start_ == 0) {
          schedule_start_ =
              clock_.schedule_start.load(std::memory_order_acquire);
        }
        if (schedule_start_ != 0) {
          next_due_ = run_schedule(now);
          wake = std::min(wake, next_due_);
        }
      }
    } else if (cfg_.mode == load_mode::connect_burst) {
      over = clock_.finish.load(std::memory_order_relaxed);
    } else {
      over = run_idle(now, wake);
    }
    if (over || !wait_events(now, wake)) break;
  }
  close_all();
  connect_phase_done.store(true, std::memory_order_release);
  finished.store(true, std::memory_order_release);
}

}  // namespace ionet_bench
