// peer-asio-echo: the echo server an asio user writes. One io_context run
// by one thread; each session loops async_read_some -> async_write of the
// whole frames -> async_read_some, kept alive by the shared_ptr its
// handlers hold.
//
// Reading waits while a write is in flight, so the unsent echo of a session
// is never more than one read's worth: backpressure comes free, and a
// client that stops reading simply stops being read from.
//
// A pending async_read_some needs its buffer for as long as it waits, so
// every session owns one, and that is most of what an idle session costs.
// It adapts to the traffic: it starts at 1 KiB (asio's own echo examples
// use 1024 bytes), doubles up to 64 KiB when a read fills it and halves
// when reads use little of it; a frame too big for it gets a buffer of its
// exact size until it has been echoed.
#include <asio.hpp>
#include <memory>

#include "common.hpp"

namespace {

const std::string program = "peer-asio-echo";

using asio::ip::tcp;

inline constexpr std::size_t min_read_bytes = 1u << 10;
inline constexpr std::size_t max_read_bytes = peers::shared_read_bytes;

// What sessions share. It outlives the io_context, because sessions still
// waiting at shutdown die when the io_context destroys their handlers.
struct shared_state {
  peers::options opts;
  peers::counters stats;
};

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, shared_state& state)
      : socket_(std::move(socket)), state_(state) {}
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  ~session() { ++state_.stats.closed; }

  void read() {
    std::size_t want = read_hint_;
    if (next_frame_ > buf_.size())
      want = std::max(want, next_frame_ - buf_.size());
    buf_.prepare(want);
    socket_.async_read_some(
        asio::buffer(buf_.data() + buf_.size(), buf_.room()),
        [self = shared_from_this()](std::error_code ec, std::size_t n) {
          self->on_read(ec, n);
        });
  }

 private:
  // An error (end of file included) ends the session: the last handler
  // drops the last reference and the socket closes.
  void on_read(std::error_code ec, std::size_t n) {
    if (ec) return;
    const std::size_t offered = buf_.room();
    if (n == offered) {
      read_hint_ = std::min(read_hint_ * 2, max_read_bytes);
    } else if (n < offered / 4) {
      read_hint_ = std::max(read_hint_ / 2, min_read_bytes);
    }
    buf_.commit(n);
    state_.stats.bytes_received += n;

    std::size_t whole = buf_.size();
    if (state_.opts.mode == peers::framing::length_prefix) {
      const peers::frame_scan s = peers::scan_frames(
          buf_.data(), buf_.size(), state_.opts.max_message_bytes);
      if (s.too_large) return;
      state_.stats.messages += s.frames;
      whole = s.whole_bytes;
      next_frame_ = s.next_frame_bytes;
    }
    if (whole == 0) return read();
    asio::async_write(
        socket_, asio::buffer(buf_.data(), whole),
        [self = shared_from_this()](std::error_code e, std::size_t sent) {
          self->on_written(e, sent);
        });
  }

  void on_written(std::error_code ec, std::size_t n) {
    if (ec) return;
    state_.stats.bytes_sent += n;
    buf_.consume(n);
    // A buffer grown past what reads need (a big frame, or a burst that has
    // passed) goes back; the next read makes one of the hinted size.
    if (buf_.empty() && buf_.capacity() > read_hint_) buf_.release();
    read();
  }

  tcp::socket socket_;
  shared_state& state_;
  peers::byte_buffer buf_;  // bytes read and not yet echoed
  std::size_t read_hint_ = min_read_bytes;
  std::size_t next_frame_ = 0;  // size of the cut frame, if known
};

class server {
 public:
  server(asio::io_context& ctx, shared_state& state, const tcp::endpoint& at)
      : acceptor_(ctx),
        retry_(ctx),
        signals_(ctx, SIGINT, SIGTERM),
        state_(state) {
    acceptor_.open(at.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(at);
    acceptor_.listen(4096);
    signals_.async_wait([this, &ctx](std::error_code, int) {
      // Stop here; the sessions close as ~io_context destroys the handlers
      // that keep them alive.
      acceptor_.close();
      ctx.stop();
    });
    // One async_accept yields one connection per trip through the loop,
    // which a connection storm under load outruns (the backlog fills and
    // clients stall). Several pending accepts are all completed from one
    // readiness event.
    for (int i = 0; i < pending_accepts; ++i) accept();
  }

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

 private:
  void accept() {
    acceptor_.async_accept([this](std::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec == asio::error::no_descriptors) {
        // Out of descriptors: a retry now would fail at once, again and
        // again. Give sessions a moment to close some.
        if (paused_++ == 0) {
          retry_.expires_after(std::chrono::milliseconds(10));
          retry_.async_wait([this](std::error_code e) {
            if (e) return;
            for (; paused_ > 0; --paused_) accept();
          });
        }
        return;
      }
      if (!ec) {
        ++state_.stats.accepted;
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<session>(std::move(socket), state_)->read();
      }
      accept();
    });
  }

  static constexpr int pending_accepts = 64;

  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  int paused_ = 0;  // accepts waiting for retry_
  asio::signal_set signals_;
  shared_state& state_;
};

}  // namespace

static int run(int argc, char** argv) {
  shared_state state;
  peers::options& opts = state.opts;
  if (auto rc = peers::parse_options(argc, argv, program, "asio", opts)) {
    return *rc;
  }
  peers::prepare_process();

  {
    // One thread runs the loop, so asio may skip every lock. The unsafe
    // hint allows one signal_set, which is all this uses.
    asio::io_context ctx(ASIO_CONCURRENCY_HINT_UNSAFE);
    tcp::endpoint at;
    std::memcpy(at.data(), &opts.addr, opts.addr_len);
    at.resize(opts.addr_len);
    std::unique_ptr<server> srv;
    try {
      srv = std::make_unique<server>(ctx, state, at);
    } catch (const std::system_error& e) {
      std::cerr << program << ": cannot listen on "
                << peers::format_endpoint(
                       reinterpret_cast<const sockaddr*>(&opts.addr))
                << ": " << e.code().message() << "\n";
      return 1;
    }
    peers::announce(srv->local_endpoint().data());
    ctx.run();
  }
  peers::print_summary("asio", opts, state.stats);
  return 0;
}

int main(int argc, char** argv) {
  return peers::guarded_main(program, run, argc, argv);
}
