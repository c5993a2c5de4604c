// peer-uring-echo: the echo server an io_uring user writes with liburing.
// One ring, one thread: a multishot accept, a multishot recv per connection
// (one SQE per connection, not per read), send SQEs, and one
// io_uring_submit_and_wait() per loop turn that submits everything the turn
// queued and waits for the next completions.
//
// Receives use a ring of provided buffers: the kernel picks a buffer only
// when bytes arrive, so a connection waiting for data holds none, and an
// idle connection costs its 40-byte slot in a table indexed by fd. Whole
// frames are sent straight from the provided buffers they arrived in
// (several at once with sendmsg), which go back to the ring when the send
// completes; only a cut frame is copied into the connection.
//
// Each connection has at most one recv and one send in flight, the send
// started at the end of a turn so that it carries everything the turn
// received. The descriptor is closed only once both have completed, so a
// completion can never meet a newer connection that reused the number;
// shutdown() makes the pending ones complete at once.
#include <liburing.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

#include <array>
#include <memory>
#include <system_error>
#include <vector>

#include "common.hpp"

namespace {

const std::string program = "peer-uring-echo";

// 1024 x 16 KiB: 16 MiB for all connections. When more connections have
// data at once than there are buffers, the rest get ENOBUFS and retry on
// the next turn, after the turn's buffers are back.
constexpr unsigned pool_buffers = 1024;  // a power of two
constexpr unsigned pool_buffer_bytes = 16u << 10;
constexpr int pool_group = 0;

enum class op : std::uint8_t { accept, recv, send, cancel, signal };

std::uint64_t tag(op o, int fd) {
  return (std::uint64_t{static_cast<std::uint32_t>(fd)} << 8) |
         static_cast<std::uint8_t>(o);
}

// A slice of echo waiting to be sent: bytes in a pool buffer (bid >= 0),
// or in a heap block of its own (bid < 0), freed once sent.
struct segment {
  char* base;
  std::uint32_t offset;
  std::uint32_t size;
  std::int32_t bid;
};

// The echo of one connection from the first byte queued until the last is
// sent; then it goes back to a free list, so idle connections hold none.
struct output {
  std::vector<segment> queue;
  std::size_t bytes = 0;  // unsent bytes in queue
  msghdr msg{};           // the send in flight, when it covers several
  std::array<iovec, 16> iov{};
};

struct connection {
  peers::byte_buffer in;  // the start of a cut frame
  std::unique_ptr<output> out;
  bool open = false;
  bool recv_armed = false;      // in the kernel, or waiting for a buffer
  bool recv_cancelled = false;  // backpressure asked the kernel to stop it
  bool send_armed = false;
  bool send_scheduled = false;  // in scheduled_: sends at the end of the turn
  bool peer_done = false;       // FIN seen: close once the echo is out
  bool closing = false;
};

class server {
 public:
  server(const peers::options& o, io_uring& ring, io_uring_buf_ring* br,
         char* pool, int listen_fd, int signal_fd)
      : opts_(o),
        ring_(ring),
        br_(br),
        pool_(pool),
        listen_fd_(listen_fd),
        signal_fd_(signal_fd) {}

  void run() {
    arm_accept();
    arm_signal();
    while (!stopping_) {
      const int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        std::cerr << program << ": io_uring_submit_and_wait: "
                  << std::system_category().message(-r) << "\n";
        break;
      }
      unsigned head = 0;
      unsigned seen = 0;
      io_uring_cqe* cqe = nullptr;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        dispatch(*cqe);
        ++seen;
      }
      io_uring_cq_advance(&ring_, seen);
      start_scheduled_sends();
      return_buffers();
      retry_starved();
    }
    // What is still queued may be in a send in flight: it is freed only
    // by ~server, after io_uring_queue_exit() has cancelled that send.
    for (std::size_t fd = 0; fd < conns_.size(); ++fd) {
      if (!conns_[fd].open) continue;
      ::close(static_cast<int>(fd));
      ++stats_.closed;
    }
  }

  ~server() {
    for (connection& c : conns_) {
      if (!c.out) continue;
      for (const segment& s : c.out->queue) {
        if (s.bid < 0) std::free(s.base);
      }
    }
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  const peers::counters& stats() const noexcept { return stats_; }

 private:
  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // The submission queue is full mid-turn: push it to the kernel now.
      return_buffers();
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void dispatch(const io_uring_cqe& cqe) {
    const auto o = static_cast<op>(cqe.user_data & 0xff);
    const auto fd = static_cast<int>(cqe.user_data >> 8);
    switch (o) {
      case op::accept:
        return on_accept(cqe);
      case op::recv:
        return on_recv(fd, conns_[static_cast<std::size_t>(fd)], cqe);
      case op::send:
        return on_send(fd, conns_[static_cast<std::size_t>(fd)], cqe);
      case op::cancel:
        return;  // the cancelled recv reports for itself
      case op::signal:
        stopping_ = true;
        return;
    }
  }

  void arm_signal() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, signal_fd_, &siginfo_, sizeof siginfo_, 0);
    io_uring_sqe_set_data64(sqe, tag(op::signal, signal_fd_));
  }

  // --- Accepting --------------------------------------------------------

  void arm_accept() {
    io_uring_sqe* sqe = get_sqe();
    if (multishot_accept_) {
      io_uring_prep_multishot_accept(sqe, listen_fd_, nullptr, nullptr,
                                     SOCK_CLOEXEC);
    } else {
      io_uring_prep_accept(sqe, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    }
    io_uring_sqe_set_data64(sqe, tag(op::accept, listen_fd_));
    accept_armed_ = true;
  }

  void on_accept(const io_uring_cqe& cqe) {
    if ((cqe.flags & IORING_CQE_F_MORE) == 0) accept_armed_ = false;
    if (cqe.res >= 0) {
      add_connection(cqe.res);
    } else if (cqe.res == -EINVAL && multishot_accept_) {
      multishot_accept_ = false;  // a kernel before 5.19: one at a time
    } else if (cqe.res == -EMFILE || cqe.res == -ENFILE) {
      // Out of descriptors: retrying now would fail again at once. Wait
      // until one of ours closes.
      accept_paused_ = true;
    }
    if (!accept_armed_ && !accept_paused_) arm_accept();
  }

  void add_connection(int fd) {
    peers::set_nodelay(fd);
    const auto slot = static_cast<std::size_t>(fd);
    if (slot >= conns_.size())
      conns_.resize(std::max(slot + 1, conns_.size() * 2));
    connection& c = conns_[slot];
    c.open = true;
    ++stats_.accepted;
    arm_recv(fd, c);
  }

  // --- Receiving ----------------------------------------------------------

  // A multishot recv stays armed and posts a completion, with a buffer of
  // its choosing, each time bytes arrive: one SQE serves a connection for
  // its whole life unless backpressure cancels it. It ends on FIN, an error
  // or an empty buffer ring (ENOBUFS).
  void arm_recv(int fd, connection& c) {
    io_uring_sqe* sqe = get_sqe();
    if (multishot_recv_) {
      io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
    } else {
      io_uring_prep_recv(sqe, fd, nullptr, pool_buffer_bytes, 0);
    }
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = pool_group;
    io_uring_sqe_set_data64(sqe, tag(op::recv, fd));
    c.recv_armed = true;
    c.recv_cancelled = false;
  }

  // Keeps a recv armed while the unsent echo is under the bound, and
  // cancels it above.
  void update_recv(int fd, connection& c) {
    if (c.peer_done || c.closing) return;
    const bool want = unsent(c) <= peers::max_unsent_bytes;
    if (want && !c.recv_armed) {
      arm_recv(fd, c);
    } else if (!want && c.recv_armed && multishot_recv_ && !c.recv_cancelled) {
      io_uring_sqe* sqe = get_sqe();
      io_uring_prep_cancel64(sqe, tag(op::recv, fd), 0);
      io_uring_sqe_set_data64(sqe, tag(op::cancel, fd));
      c.recv_cancelled = true;
    }
  }

  void on_recv(int fd, connection& c, const io_uring_cqe& cqe) {
    if ((cqe.flags & IORING_CQE_F_MORE) == 0) c.recv_armed = false;
    if (c.closing) {
      if (cqe.flags & IORING_CQE_F_BUFFER) return_buffer(buffer_id(cqe));
      return finish_close(fd, c);
    }
    if (cqe.res > 0) {
      const auto n = static_cast<std::size_t>(cqe.res);
      stats_.bytes_received += n;
      const std::uint16_t bid = buffer_id(cqe);
      if (!take_received(fd, c, bid, n)) return_buffer(bid);
      if (c.closing) return;
    } else if (cqe.res == 0) {
      if (unsent(c) == 0) return close_connection(fd, c);
      c.peer_done = true;  // the queued echo still goes out, then we close
      return;
    } else if (cqe.res == -ENOBUFS) {
      c.recv_armed = true;  // waits in starved_ for the turn's buffers
      starved_.push_back(fd);
      return;
    } else if (cqe.res == -EINVAL && multishot_recv_) {
      multishot_recv_ = false;  // a kernel before 6.0: one recv at a time
    } else if (cqe.res != -ECANCELED) {
      return close_connection(fd, c);
    }
    update_recv(fd, c);
  }

  static std::uint16_t buffer_id(const io_uring_cqe& cqe) {
    return static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  }

  void retry_starved() {
    std::vector<int> starved;
    starved.swap(starved_);
    for (int fd : starved) {
      connection& c = conns_[static_cast<std::size_t>(fd)];
      c.recv_armed = false;
      if (c.closing) {
        finish_close(fd, c);
      } else {
        update_recv(fd, c);
      }
    }
  }

  // Decodes n new bytes in pool buffer bid and queues their echo. Returns
  // true when the echo holds the buffer.
  bool take_received(int fd, connection& c, std::uint16_t bid, std::size_t n) {
    const char* p = buffer_address(bid);
    if (opts_.mode == peers::framing::raw)
      return echo_from_pool(fd, c, bid, 0, n);
    std::size_t off = 0;
    if (!c.in.empty()) {
      // Complete the cut frame with the front of the new bytes.
      if (c.in.size() < peers::header_bytes) {
        const std::size_t take = std::min(peers::header_bytes - c.in.size(), n);
        c.in.append(p, take);
        off = take;
        if (c.in.size() < peers::header_bytes) return false;
      }
      const std::uint32_t len = peers::load_be32(c.in.data());
      if (len > opts_.max_message_bytes) {
        close_connection(fd, c);
        return false;
      }
      const std::size_t frame = peers::header_bytes + len;
      const std::size_t take = std::min(frame - c.in.size(), n - off);
      c.in.prepare(frame - c.in.size());
      c.in.append(p + off, take);
      off += take;
      if (c.in.size() < frame) return false;
      ++stats_.messages;
      // The stash becomes the echo as it is, without a copy.
      enqueue(fd, c,
              segment{c.in.detach(), 0, static_cast<std::uint32_t>(frame), -1});
    }
    const peers::frame_scan s =
        peers::scan_frames(p + off, n - off, opts_.max_message_bytes);
    if (s.too_large) {
      close_connection(fd, c);
      return false;
    }
    stats_.messages += s.frames;
    const bool held =
        s.whole_bytes > 0 && echo_from_pool(fd, c, bid, off, s.whole_bytes);
    const std::size_t rest = off + s.whole_bytes;
    if (rest < n) {
      // The cut frame is completed here: size the stash for all of it once.
      if (s.next_frame_bytes > 0) c.in.prepare(s.next_frame_bytes);
      c.in.append(p + rest, n - rest);
    }
    return held;
  }

  // --- Sending ------------------------------------------------------------

  // Queues n bytes at off in pool buffer bid, in place (returns true: the
  // queue holds the buffer) unless the queues already hold half the pool:
  // receives must always find buffers, even when many clients stop
  // reading. Past that the bytes are copied and the buffer goes back.
  bool echo_from_pool(int fd, connection& c, std::uint16_t bid, std::size_t off,
                      std::size_t n) {
    const auto size = static_cast<std::uint32_t>(n);
    if (held_buffers_ < pool_buffers / 2) {
      ++held_buffers_;
      enqueue(fd, c,
              segment{buffer_address(bid), static_cast<std::uint32_t>(off),
                      size, bid});
      return true;
    }
    auto* copy = static_cast<char*>(std::malloc(n));
    if (copy == nullptr) throw std::bad_alloc();
    std::memcpy(copy, buffer_address(bid) + off, n);
    enqueue(fd, c, segment{copy, 0, size, -1});
    return false;
  }

  void enqueue(int fd, connection& c, const segment& s) {
    if (!c.out) {
      if (spare_outputs_.empty()) {
        c.out = std::make_unique<output>();
      } else {
        c.out = std::move(spare_outputs_.back());
        spare_outputs_.pop_back();
      }
    }
    c.out->queue.push_back(s);
    c.out->bytes += s.size;
    schedule_send(fd, c);
  }

  // Sends start at the end of the turn, so that one send carries all that
  // the turn's completions queued.
  void schedule_send(int fd, connection& c) {
    if (c.send_armed || c.send_scheduled) return;
    c.send_scheduled = true;
    scheduled_.push_back(fd);
  }

  void start_scheduled_sends() {
    for (int fd : scheduled_) {
      connection& c = conns_[static_cast<std::size_t>(fd)];
      if (!c.send_scheduled) continue;  // closed since
      c.send_scheduled = false;
      if (!c.closing && !c.send_armed && c.out) start_send(fd, c);
    }
    scheduled_.clear();
  }

  // One segment goes with send; several with one sendmsg.
  void start_send(int fd, connection& c) {
    output& o = *c.out;
    const std::size_t k = std::min(o.queue.size(), o.iov.size());
    io_uring_sqe* sqe = get_sqe();
    if (k == 1) {
      const segment& s = o.queue.front();
      io_uring_prep_send(sqe, fd, s.base + s.offset, s.size, MSG_NOSIGNAL);
    } else {
      for (std::size_t i = 0; i < k; ++i) {
        const segment& s = o.queue[i];
        o.iov[i] = iovec{s.base + s.offset, s.size};
      }
      o.msg = msghdr{};
      o.msg.msg_iov = o.iov.data();
      o.msg.msg_iovlen = k;
      io_uring_prep_sendmsg(sqe, fd, &o.msg, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data64(sqe, tag(op::send, fd));
    c.send_armed = true;
  }

  void on_send(int fd, connection& c, const io_uring_cqe& cqe) {
    c.send_armed = false;
    if (c.closing) return finish_close(fd, c);
    if (cqe.res < 0) return close_connection(fd, c);
    output& o = *c.out;
    auto left = static_cast<std::size_t>(cqe.res);
    stats_.bytes_sent += left;
    o.bytes -= left;
    // Drop what was sent; a short send leaves the rest of a segment.
    auto it = o.queue.begin();
    for (; left > 0 && left >= it->size; ++it) {
      left -= it->size;
      drop_segment(*it);
    }
    if (left > 0) {
      it->offset += static_cast<std::uint32_t>(left);
      it->size -= static_cast<std::uint32_t>(left);
    }
    o.queue.erase(o.queue.begin(), it);
    if (o.queue.empty()) {
      drop_output(c);
      if (c.peer_done) return close_connection(fd, c);
    } else {
      schedule_send(fd, c);
    }
    update_recv(fd, c);
  }

  void drop_segment(const segment& s) {
    if (s.bid >= 0) {
      return_buffer(static_cast<std::uint16_t>(s.bid));
      --held_buffers_;
    } else {
      std::free(s.base);
    }
  }

  // Drops what is queued and keeps the output for another connection.
  void drop_output(connection& c) {
    if (!c.out) return;
    for (const segment& s : c.out->queue) drop_segment(s);
    c.out->queue.clear();
    c.out->bytes = 0;
    if (spare_outputs_.size() < 256) spare_outputs_.push_back(std::move(c.out));
    c.out.reset();
  }

  static std::size_t unsent(const connection& c) {
    return c.out ? c.out->bytes : 0;
  }

  // --- Closing --------------------------------------------------------------

  // shutdown() completes the recv and send in flight; the descriptor is
  // closed when the last of them is back (finish_close).
  void close_connection(int fd, connection& c) {
    if (c.closing) return;
    c.closing = true;
    c.in.release();
    if (c.recv_armed || c.send_armed) ::shutdown(fd, SHUT_RDWR);
    finish_close(fd, c);
  }

  void finish_close(int fd, connection& c) {
    if (c.recv_armed || c.send_armed) return;
    ::close(fd);
    drop_output(c);
    c = connection{};
    ++stats_.closed;
    if (accept_paused_) {
      accept_paused_ = false;
      if (!accept_armed_) arm_accept();
    }
  }

  // --- The provided buffers -------------------------------------------------

  char* buffer_address(std::uint16_t bid) const {
    return pool_ + std::size_t{bid} * pool_buffer_bytes;
  }

  // Buffers go back to the ring at the end of the turn, in one store.
  void return_buffer(std::uint16_t bid) {
    io_uring_buf_ring_add(br_, buffer_address(bid), pool_buffer_bytes, bid,
                          io_uring_buf_ring_mask(pool_buffers), returned_++);
  }
  void return_buffers() {
    if (returned_ == 0) return;
    io_uring_buf_ring_advance(br_, returned_);
    returned_ = 0;
  }

  const peers::options& opts_;
  io_uring& ring_;
  io_uring_buf_ring* br_;
  char* pool_;
  int listen_fd_;
  int signal_fd_;
  signalfd_siginfo siginfo_{};
  std::vector<connection> conns_;
  std::vector<int> starved_;    // recv said ENOBUFS: armed again next turn
  std::vector<int> scheduled_;  // sends to start at the end of the turn
  std::vector<std::unique_ptr<output>> spare_outputs_;
  peers::counters stats_;
  int returned_ = 0;
  unsigned held_buffers_ = 0;  // pool buffers held by echo queues
  bool multishot_accept_ = true;
  bool multishot_recv_ = true;
  bool accept_armed_ = false;
  bool accept_paused_ = false;
  bool stopping_ = false;
};

// One submitter thread, and task work run only when we wait for
// completions: both let the kernel skip work. Kernels before 6.1 refuse
// those flags, so fall back to a plain ring. The completion queue is made
// big enough for a recv and a send per connection at a time.
int setup_ring(io_uring& ring) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = 32768;
  int r = io_uring_queue_init_params(4096, &ring, &p);
  if (r == -EINVAL) {
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 32768;
    r = io_uring_queue_init_params(4096, &ring, &p);
  }
  return r;
}

// Registers pool_buffers buffers of pool_buffer_bytes as group pool_group.
// Returns the ring of buffers, or null (errno set) on a kernel before 5.19.
io_uring_buf_ring* setup_buffers(io_uring& ring, char*& pool) {
  const std::size_t ring_bytes = pool_buffers * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  auto* br = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(br);
  reg.ring_entries = pool_buffers;
  reg.bgid = pool_group;
  if (int r = io_uring_register_buf_ring(&ring, &reg, 0); r != 0) {
    errno = -r;
    return nullptr;
  }
  pool = static_cast<char*>(
      std::malloc(std::size_t{pool_buffers} * pool_buffer_bytes));
  if (pool == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  io_uring_buf_ring_init(br);
  const int mask = io_uring_buf_ring_mask(pool_buffers);
  for (unsigned i = 0; i < pool_buffers; ++i) {
    io_uring_buf_ring_add(br, pool + std::size_t{i} * pool_buffer_bytes,
                          pool_buffer_bytes, static_cast<std::uint16_t>(i),
                          mask, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(br, pool_buffers);
  return br;
}

}  // namespace

static int run(int argc, char** argv) {
  peers::options opts;
  if (auto rc = peers::parse_options(argc, argv, program, "io_uring", opts)) {
    return *rc;
  }
  peers::prepare_process();

  // Probe first: without a working io_uring there is nothing to compare.
  io_uring ring{};
  if (int r = setup_ring(ring); r < 0) {
    std::cerr << program << ": io_uring cannot be set up here: "
              << std::system_category().message(-r)
              << " (needs Linux 5.19 or later, with io_uring not disabled by "
                 "sysctl kernel.io_uring_disabled or a seccomp filter)\n";
    return 1;
  }
  char* pool = nullptr;
  io_uring_buf_ring* br = setup_buffers(ring, pool);
  if (br == nullptr) {
    std::cerr << program << ": io_uring provided buffer ring: "
              << std::system_category().message(errno)
              << " (needs Linux 5.19 or later)\n";
    return 1;
  }

  // SIGINT and SIGTERM arrive as a read completing on a signalfd.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  const int signal_fd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  if (signal_fd < 0) {
    std::cerr << program
              << ": signalfd: " << std::system_category().message(errno)
              << "\n";
    return 1;
  }
  const int listen_fd = peers::open_listener(opts, program, 0);
  if (listen_fd < 0) return 1;
  peers::announce_socket(listen_fd);

  peers::counters stats;
  {
    server srv(opts, ring, br, pool, listen_fd, signal_fd);
    srv.run();
    io_uring_queue_exit(&ring);  // cancels what is still in flight
    stats = srv.stats();
  }
  ::close(listen_fd);
  ::close(signal_fd);
  std::free(pool);
  peers::print_summary("uring", opts, stats);
  return 0;
}

int main(int argc, char** argv) {
  return peers::guarded_main(program, run, argc, argv);
}
