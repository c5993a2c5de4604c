// peer-epoll-echo: the echo server a Linux programmer writes by hand. One
// thread, one epoll set, non-blocking sockets, no library.
//
// Level-triggered, not edge-triggered: a wakeup reads a connection only
// until a read comes back short (or a few times at most), and epoll reports
// the socket again if bytes remain, so thousands of busy connections share
// the thread fairly without a list of "still readable" sockets.
// Backpressure is then just taking EPOLLIN out of the interest set.
//
// Memory: reads land in one 64 KiB buffer shared by every connection and
// whole frames are echoed from there with send(). A connection owns heap
// memory only while it holds a cut frame (in) or echo bytes the socket would
// not take yet (out), so an idle one costs its slot in a table indexed by
// fd: two empty byte_buffers and a few flags, 56 bytes.
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <system_error>
#include <vector>

#include "common.hpp"

namespace {

const std::string program = "peer-epoll-echo";

struct connection {
  peers::byte_buffer in;     // the start of a cut frame
  peers::byte_buffer out;    // echo bytes send() did not take yet
  std::uint32_t events = 0;  // the interest set epoll holds now
  bool open = false;
  bool peer_done = false;  // FIN seen: close once out is sent
};

class server {
 public:
  server(const peers::options& o, int listen_fd, int epoll_fd, int signal_fd)
      : opts_(o),
        listen_fd_(listen_fd),
        epoll_fd_(epoll_fd),
        signal_fd_(signal_fd),
        shared_(peers::shared_read_bytes) {}

  void run() {
    epoll_event events[512];
    while (!stopping_) {
      const int n = ::epoll_wait(epoll_fd_, events, 512, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::cerr << program
                  << ": epoll_wait: " << std::system_category().message(errno)
                  << "\n";
        break;
      }
      for (int i = 0; i < n; ++i) dispatch(events[i]);
    }
    for (std::size_t fd = 0; fd < conns_.size(); ++fd) {
      if (conns_[fd].open) close_connection(static_cast<int>(fd));
    }
  }

  const peers::counters& stats() const noexcept { return stats_; }

 private:
  void dispatch(const epoll_event& e) {
    const int fd = e.data.fd;
    if (fd == listen_fd_) return accept_all();
    if (fd == signal_fd_) {
      stopping_ = true;
      return;
    }
    // An error or hangup is found by the read or the send that follows.
    connection& c = conns_[static_cast<std::size_t>(fd)];
    if ((e.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (c.events & EPOLLIN)) {
      on_readable(fd, c);
    }
    if (c.open && (e.events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
        !c.out.empty()) {
      on_writable(fd, c);
    }
  }

  void accept_all() {
    // Bounded, so a connection storm cannot starve the echo traffic; the
    // level-triggered listener is reported again next turn.
    for (int i = 0; i < 64; ++i) {
      const int fd =
          ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          // Out of descriptors: the pending connection would wake us at
          // once, forever. Mute the listener until one of ours closes.
          set_listener(0);
        }
        return;  // EAGAIN, or an aborted connection: try next turn
      }
      peers::set_nodelay(fd);
      const auto slot = static_cast<std::size_t>(fd);
      if (slot >= conns_.size())
        conns_.resize(std::max(slot + 1, conns_.size() * 2));
      connection& c = conns_[slot];
      c.open = true;
      c.events = EPOLLIN;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      ++stats_.accepted;
    }
  }

  void set_listener(std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = listen_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
    listener_muted_ = events == 0;
  }

  // Reads again while a read fills all the room it was given (more is
  // likely waiting), at most 16 times, so one fast sender cannot hold the
  // thread.
  void on_readable(int fd, connection& c) {
    for (int i = 0; i < 16 && (c.events & EPOLLIN); ++i) {
      if (!read_once(fd, c)) return;
    }
  }

  // Returns true when the read filled its buffer and the connection is
  // still open.
  bool read_once(int fd, connection& c) {
    if (opts_.mode == peers::framing::raw) {
      const ssize_t n = ::recv(fd, shared_.data(), shared_.size(), 0);
      if (n <= 0) return on_read_end(fd, c, n);
      stats_.bytes_received += static_cast<std::size_t>(n);
      return echo(fd, c, shared_.data(), static_cast<std::size_t>(n)) &&
             static_cast<std::size_t>(n) == shared_.size();
    }
    const peers::read_target t = peers::prepare_read(c.in, shared_);
    const ssize_t n = ::recv(fd, t.data, t.room, 0);
    if (n <= 0) return on_read_end(fd, c, n);
    stats_.bytes_received += static_cast<std::size_t>(n);
    const std::span<char> bytes =
        peers::landed(c.in, t, static_cast<std::size_t>(n), shared_);
    const peers::frame_scan s =
        peers::scan_frames(bytes.data(), bytes.size(), opts_.max_message_bytes);
    if (s.too_large) {
      close_connection(fd);
      return false;
    }
    stats_.messages += s.frames;
    if (s.whole_bytes > 0 && !echo(fd, c, bytes.data(), s.whole_bytes)) {
      return false;
    }
    peers::keep_tail(c.in, t, bytes, s, shared_.size());
    return static_cast<std::size_t>(n) == t.room;
  }

  // recv() returned 0 (FIN) or failed. Returns false: stop reading.
  bool on_read_end(int fd, connection& c, ssize_t n) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    if (n < 0 || c.out.empty()) {
      close_connection(fd);
    } else {
      c.peer_done = true;  // what is queued still goes out, then we close
      update_interest(fd, c);
    }
    return false;
  }

  // Sends at once when nothing is queued ahead; keeps what the socket does
  // not take. Returns false when the connection was closed.
  bool echo(int fd, connection& c, const char* p, std::size_t n) {
    if (c.out.empty()) {
      const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN && errno != EINTR) {
        close_connection(fd);
        return false;
      }
      const std::size_t sent = w > 0 ? static_cast<std::size_t>(w) : 0;
      stats_.bytes_sent += sent;
      if (sent == n) return true;
      p += sent;
      n -= sent;
    }
    c.out.append(p, n);
    update_interest(fd, c);
    return true;
  }

  void on_writable(int fd, connection& c) {
    const ssize_t w = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) close_connection(fd);
      return;
    }
    stats_.bytes_sent += static_cast<std::size_t>(w);
    c.out.consume(static_cast<std::size_t>(w));
    if (c.out.empty()) {
      c.out.release();
      if (c.peer_done) return close_connection(fd);
    }
    update_interest(fd, c);
  }

  // Read while the unsent echo is under the bound; want EPOLLOUT while any
  // is left.
  void update_interest(int fd, connection& c) {
    std::uint32_t want = 0;
    if (!c.peer_done && c.out.size() <= peers::max_unsent_bytes)
      want |= EPOLLIN;
    if (!c.out.empty()) want |= EPOLLOUT;
    if (want == c.events) return;
    c.events = want;
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
  }

  // close() also takes the socket out of the epoll set.
  void close_connection(int fd) {
    connection& c = conns_[static_cast<std::size_t>(fd)];
    ::close(fd);
    c = connection{};
    ++stats_.closed;
    if (listener_muted_) set_listener(EPOLLIN);
  }

  const peers::options& opts_;
  int listen_fd_;
  int epoll_fd_;
  int signal_fd_;
  std::vector<char> shared_;
  std::vector<connection> conns_;
  peers::counters stats_;
  bool stopping_ = false;
  bool listener_muted_ = false;
};

}  // namespace

static int run(int argc, char** argv) {
  peers::options opts;
  if (auto rc =
          peers::parse_options(argc, argv, program, "plain epoll", opts)) {
    return *rc;
  }
  peers::prepare_process();

  // SIGINT and SIGTERM arrive as a readable descriptor in the same epoll
  // set, so stopping needs no flag checked between waits.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  const int signal_fd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (signal_fd < 0 || epoll_fd < 0) {
    std::cerr << program << ": " << std::system_category().message(errno)
              << "\n";
    return 1;
  }
  const int listen_fd = peers::open_listener(opts, program, SOCK_NONBLOCK);
  if (listen_fd < 0) return 1;
  for (int fd : {listen_fd, signal_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }
  peers::announce_socket(listen_fd);

  server srv(opts, listen_fd, epoll_fd, signal_fd);
  srv.run();
  ::close(listen_fd);
  ::close(epoll_fd);
  ::close(signal_fd);
  peers::print_summary("epoll", opts, srv.stats());
  return 0;
}

int main(int argc, char** argv) {
  return peers::guarded_main(program, run, argc, argv);
}
