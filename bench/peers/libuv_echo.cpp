// peer-libuv-echo: the echo server a libuv user writes. One uv_loop_t,
// uv_read_start() with an alloc callback, uv_try_write() first and
// uv_write() for what the socket did not take.
//
// The alloc callback hands out one 64 KiB buffer shared by every
// connection: libuv calls the read callback right after the read, before
// any other alloc, and whole frames are echoed from that buffer. Only a cut
// frame is kept per connection (see prepare_read in common.hpp), so an idle
// connection costs its uv_tcp_t and a few bytes more.
//
// Backpressure: when the bytes libuv still has to write for a connection
// (its write queue) pass max_unsent_bytes, reading stops until the write
// callbacks bring it back under.
#include <uv.h>

#include <vector>

#include "common.hpp"

namespace {

const std::string program = "peer-libuv-echo";

struct server {
  const peers::options* opts = nullptr;
  peers::counters stats;
  std::vector<char> shared = std::vector<char>(peers::shared_read_bytes);
};

// handle.data points to the connection; handles with null data (listener,
// signals) belong to main().
struct connection {
  uv_tcp_t handle{};
  peers::byte_buffer in;  // the start of a cut frame
  bool reading = false;
  bool peer_done = false;  // FIN seen: close once the write queue drains
};

// One allocation holds the request and, right after it, the bytes it
// writes.
struct write_request {
  uv_write_t req;
  std::size_t size;

  char* bytes() noexcept { return reinterpret_cast<char*>(this + 1); }

  static write_request* make(const char* p, std::size_t n) {
    void* mem = std::malloc(sizeof(write_request) + n);
    if (mem == nullptr) throw std::bad_alloc();
    auto* w = new (mem) write_request;
    w->size = n;
    std::memcpy(w->bytes(), p, n);
    return w;
  }
};

server& server_of(uv_handle_t* h) {
  return *static_cast<server*>(uv_handle_get_loop(h)->data);
}
connection& connection_of(uv_handle_t* h) {
  return *static_cast<connection*>(h->data);
}
uv_stream_t* stream_of(connection& c) {
  return reinterpret_cast<uv_stream_t*>(&c.handle);
}

void on_closed(uv_handle_t* h) {
  if (h->data == nullptr) return;
  ++server_of(h).stats.closed;
  delete &connection_of(h);
}

void close_connection(connection& c) {
  auto* h = reinterpret_cast<uv_handle_t*>(&c.handle);
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

std::size_t write_queue_of(connection& c) {
  return uv_stream_get_write_queue_size(stream_of(c));
}

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf);
void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

void start_reading(connection& c) {
  c.reading = uv_read_start(stream_of(c), on_alloc, on_read) == 0;
}

void on_written(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<write_request*>(req);
  auto* h = reinterpret_cast<uv_handle_t*>(req->handle);
  const std::size_t size = w->size;
  std::free(w);
  if (uv_is_closing(h)) return;  // status is UV_ECANCELED
  connection& c = connection_of(h);
  if (status < 0) return close_connection(c);
  server_of(h).stats.bytes_sent += size;
  if (c.peer_done) {
    if (write_queue_of(c) == 0) close_connection(c);
  } else if (!c.reading && write_queue_of(c) <= peers::max_unsent_bytes) {
    start_reading(c);
  }
}

// Returns false when the connection was closed.
bool echo(server& srv, connection& c, const char* p, std::size_t n) {
  // uv_try_write() says EAGAIN while earlier writes are queued, so the
  // order of the echo is kept.
  uv_buf_t b = uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(n));
  const int w = uv_try_write(stream_of(c), &b, 1);
  if (w < 0 && w != UV_EAGAIN) {
    close_connection(c);
    return false;
  }
  const std::size_t sent = w > 0 ? static_cast<std::size_t>(w) : 0;
  srv.stats.bytes_sent += sent;
  if (sent == n) return true;
  write_request* req = write_request::make(p + sent, n - sent);
  b = uv_buf_init(req->bytes(), static_cast<unsigned>(req->size));
  if (uv_write(&req->req, stream_of(c), &b, 1, on_written) != 0) {
    std::free(req);
    close_connection(c);
    return false;
  }
  if (write_queue_of(c) > peers::max_unsent_bytes && c.reading) {
    uv_read_stop(stream_of(c));
    c.reading = false;
  }
  return true;
}

// The read that follows lands where prepare_read() says: the shared buffer
// (after the cut frame's bytes, put back), or a big frame's own stash.
void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  server& srv = server_of(h);
  if (srv.opts->mode == peers::framing::raw) {
    *buf = uv_buf_init(srv.shared.data(),
                       static_cast<unsigned>(srv.shared.size()));
    return;
  }
  const peers::read_target t =
      peers::prepare_read(connection_of(h).in, srv.shared);
  *buf = uv_buf_init(t.data, static_cast<unsigned>(t.room));
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* h = reinterpret_cast<uv_handle_t*>(s);
  server& srv = server_of(h);
  connection& c = connection_of(h);
  if (nread == 0) return;  // EAGAIN
  if (nread < 0) {
    if (nread != UV_EOF || write_queue_of(c) == 0) return close_connection(c);
    c.peer_done = true;  // the queued echo still goes out, then we close
    uv_read_stop(s);
    c.reading = false;
    return;
  }
  const auto n = static_cast<std::size_t>(nread);
  srv.stats.bytes_received += n;
  if (srv.opts->mode == peers::framing::raw) {
    echo(srv, c, buf->base, n);
    return;
  }
  // Rebuild the target prepare_read() chose: the stash, when the read
  // went there, or else the shared buffer after the cut frame's bytes.
  const bool into_stash =
      !c.in.empty() && buf->base == c.in.data() + c.in.size();
  const peers::read_target t{buf->base, buf->len, into_stash};
  const std::span<char> bytes = peers::landed(c.in, t, n, srv.shared);
  const peers::frame_scan f = peers::scan_frames(bytes.data(), bytes.size(),
                                                 srv.opts->max_message_bytes);
  if (f.too_large) return close_connection(c);
  srv.stats.messages += f.frames;
  if (f.whole_bytes > 0 && !echo(srv, c, bytes.data(), f.whole_bytes)) return;
  peers::keep_tail(c.in, t, bytes, f, srv.shared.size());
}

void on_connection(uv_stream_t* listener, int status) {
  if (status < 0) return;  // libuv keeps listening
  auto* c = new connection;
  uv_tcp_init(uv_handle_get_loop(reinterpret_cast<uv_handle_t*>(listener)),
              &c->handle);
  c->handle.data = c;
  if (uv_accept(listener, stream_of(*c)) != 0) {
    // Never counted as accepted, so not as closed either.
    uv_close(reinterpret_cast<uv_handle_t*>(&c->handle),
             [](uv_handle_t* h) { delete static_cast<connection*>(h->data); });
    return;
  }
  ++server_of(reinterpret_cast<uv_handle_t*>(listener)).stats.accepted;
  uv_tcp_nodelay(&c->handle, 1);
  start_reading(*c);
}

// SIGINT/SIGTERM: close every handle; uv_run() returns once all are closed.
void on_signal(uv_signal_t* sig, int) {
  uv_walk(
      uv_handle_get_loop(reinterpret_cast<uv_handle_t*>(sig)),
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, on_closed);
      },
      nullptr);
}

int fail(const char* what, int err) {
  std::cerr << program << ": " << what << ": " << uv_strerror(err) << "\n";
  return 1;
}

}  // namespace

static int run(int argc, char** argv) {
  peers::options opts;
  if (auto rc = peers::parse_options(argc, argv, program, "libuv", opts)) {
    return *rc;
  }
  peers::prepare_process();

  server srv;
  srv.opts = &opts;
  uv_loop_t loop;
  if (int err = uv_loop_init(&loop); err != 0) return fail("uv_loop_init", err);
  loop.data = &srv;

  // uv_tcp_bind() sets SO_REUSEADDR itself. A bind error may only show at
  // uv_listen().
  uv_tcp_t listener;
  uv_tcp_init(&loop, &listener);
  listener.data = nullptr;
  const auto* addr = reinterpret_cast<const sockaddr*>(&opts.addr);
  if (int err = uv_tcp_bind(&listener, addr, 0); err != 0) {
    return fail(("cannot listen on " + peers::format_endpoint(addr)).c_str(),
                err);
  }
  if (int err = uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4096,
                          on_connection);
      err != 0) {
    return fail(("cannot listen on " + peers::format_endpoint(addr)).c_str(),
                err);
  }
  sockaddr_storage bound{};
  int bound_len = sizeof bound;
  uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound),
                     &bound_len);

  uv_signal_t sigint, sigterm;
  for (uv_signal_t* sig : {&sigint, &sigterm}) {
    uv_signal_init(&loop, sig);
    sig->data = nullptr;
  }
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);

  peers::announce(reinterpret_cast<const sockaddr*>(&bound));
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  peers::print_summary("libuv", opts, srv.stats);
  return 0;
}

int main(int argc, char** argv) {
  return peers::guarded_main(program, run, argc, argv);
}
