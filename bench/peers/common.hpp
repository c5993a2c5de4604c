// What the four peer echo servers share: the command line, the process
// setup, the exit summary, length-prefix framing and a small byte buffer.
// Each server file keeps only its event loop, so the four differ in the
// mechanism being compared and in nothing else.
//
// The rules they all follow (the benchmark relies on them):
// - Once listening, exactly one line "listening on HOST:PORT" on stdout
//   (IPv6 as [ADDR]:PORT).
// - raw: bytes are echoed as they arrive. length_prefix: a frame is a 4-byte
//   big-endian length and that many bytes; each frame is echoed exactly as
//   received, header included, once all of it has arrived. A length above
//   --max-message-bytes closes that connection.
// - A connection whose unsent echo passes max_unsent_bytes is not read from
//   until the client catches up, so memory stays bounded.
// - After the peer's FIN, what was received is still echoed, then closed.
// - SIGINT/SIGTERM: close everything, print one JSON line, exit 0.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>

namespace peers {

enum class framing { raw, length_prefix };

struct options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string framing_name = "length_prefix";
  framing mode = framing::length_prefix;
  std::uint32_t max_message_bytes = 1u << 20;
  sockaddr_storage addr{};  // host and port, parsed
  socklen_t addr_len = 0;
};

// A client that stops reading makes its echo pile up; past this many unsent
// bytes the server stops reading from it. 4 MiB is far above what a
// closed-loop client keeps in flight, so only a stuck client ever hits it.
inline constexpr std::size_t max_unsent_bytes = std::size_t{4} << 20;

// The read buffer a loop shares among its connections (epoll, libuv). It
// matches libuv's suggested read size.
inline constexpr std::size_t shared_read_bytes = std::size_t{64} << 10;

inline constexpr std::size_t header_bytes = 4;

struct counters {
  std::uint64_t accepted = 0;
  std::uint64_t closed = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t messages = 0;  // length_prefix frames echoed; 0 in raw
};

inline bool parse_address(std::string host, std::uint16_t port,
                          sockaddr_storage& out, socklen_t& len) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  out = sockaddr_storage{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// Parses the command line. Returns the exit status when the process should
// stop right away: 0 after --help, 2 after a bad flag.
inline std::optional<int> parse_options(int argc, char** argv,
                                        const std::string& program,
                                        const std::string& mechanism,
                                        options& o) {
  CLI::App app{program + ": single-threaded echo server on " + mechanism +
               ", a peer that ionet's benchmark compares against."};
  app.footer(
      "Output: once listening, one line 'listening on HOST:PORT' on stdout.\n"
      "On SIGINT or SIGTERM one JSON object follows: {server, framing,\n"
      "accepted, closed, bytes_received, bytes_sent, messages}.\n"
      "Exit codes: 0 after a signal; 1 when the server cannot start;\n"
      "2 on a bad flag.");
  app.add_option("--host", o.host, "IPv4 or IPv6 literal to listen on")
      ->capture_default_str();
  app.add_option("--port", o.port, "TCP port; 0 picks a free one")
      ->capture_default_str();
  app.add_option("--framing", o.framing_name, "length_prefix or raw")
      ->check(CLI::IsMember({"length_prefix", "raw"}))
      ->capture_default_str();
  // The cap keeps every size in 32 bits, so buffers can use 32-bit fields.
  app.add_option("--max-message-bytes", o.max_message_bytes,
                 "largest length_prefix payload; a larger one closes the "
                 "connection")
      ->check(CLI::Range(0u, 1u << 30))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.mode = o.framing_name == "raw" ? framing::raw : framing::length_prefix;
  if (!parse_address(o.host, o.port, o.addr, o.addr_len)) {
    std::cerr << program << ": --host '" << o.host
              << "' is not an IPv4 or IPv6 literal\n";
    return 2;
  }
  return std::nullopt;
}

// Tens of thousands of connections need as many descriptors: lift the soft
// limit to the hard one. A failure shows up later as accept errors.
inline void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Common start-up: descriptors, and no SIGPIPE (libuv writes with write(),
// which raises it when the peer has reset the connection).
inline void prepare_process() {
  raise_fd_limit();
  std::signal(SIGPIPE, SIG_IGN);
}

inline std::string format_endpoint(const sockaddr* sa) {
  char text[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    return "[" + std::string(text) +
           "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
  ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
  return std::string(text) + ":" + std::to_string(ntohs(v4->sin_port));
}

// The benchmark waits for this line to learn the port: flush it now.
inline void announce(const sockaddr* bound) {
  std::cout << "listening on " << format_endpoint(bound) << std::endl;
}

inline void print_summary(const std::string& server, const options& o,
                          const counters& c) {
  const nlohmann::ordered_json out = {
      {"server", server},
      {"framing", o.framing_name},
      {"accepted", c.accepted},
      {"closed", c.closed},
      {"bytes_received", c.bytes_received},
      {"bytes_sent", c.bytes_sent},
      {"messages", c.messages},
  };
  std::cout << out.dump() << std::endl;
}

// A listening socket for the servers that drive sockets themselves (epoll,
// io_uring); libuv and asio bind through their own API. Returns -1 after
// printing why.
inline int open_listener(const options& o, const std::string& program,
                         int type_flags) {
  const int fd =
      ::socket(o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  if (fd < 0) {
    std::cerr << program
              << ": socket: " << std::system_category().message(errno) << "\n";
    return -1;
  }
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&o.addr), o.addr_len) != 0 ||
      ::listen(fd, 4096) != 0) {
    std::cerr << program << ": cannot listen on "
              << format_endpoint(reinterpret_cast<const sockaddr*>(&o.addr))
              << ": " << std::system_category().message(errno) << "\n";
    ::close(fd);
    return -1;
  }
  return fd;
}

// Prints "listening on ..." with the port the kernel chose.
inline void announce_socket(int fd) {
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  announce(reinterpret_cast<const sockaddr*>(&bound));
}

// Echo traffic is small request/response: do not let Nagle hold it back.
inline void set_nodelay(int fd) {
  const int on = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

// --- Length-prefix framing ------------------------------------------------

inline std::uint32_t load_be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) |
         (std::uint32_t{u[2]} << 8) | std::uint32_t{u[3]};
}

struct frame_scan {
  std::size_t whole_bytes = 0;  // the whole frames at the front, headers in
  std::uint64_t frames = 0;
  std::size_t next_frame_bytes = 0;  // size of the cut frame, 0 if unknown
  bool too_large = false;
};

// Walks the frames at the front of [p, p + n).
inline frame_scan scan_frames(const char* p, std::size_t n,
                              std::uint32_t max_payload) {
  frame_scan s;
  while (n - s.whole_bytes >= header_bytes) {
    const std::uint32_t len = load_be32(p + s.whole_bytes);
    if (len > max_payload) {
      s.too_large = true;
      break;
    }
    const std::size_t frame = header_bytes + len;
    if (n - s.whole_bytes < frame) {
      s.next_frame_bytes = frame;
      break;
    }
    s.whole_bytes += frame;
    ++s.frames;
  }
  return s;
}

// --- byte_buffer ----------------------------------------------------------

// A growable byte queue: append at the back, consume from the front. Unlike
// std::vector it hands out uninitialised room to read into, and it is 24
// bytes with 32-bit sizes, because idle connections are what the benchmark
// measures; a released buffer holds no heap memory at all.
class byte_buffer {
 public:
  byte_buffer() = default;
  byte_buffer(const byte_buffer&) = delete;
  byte_buffer& operator=(const byte_buffer&) = delete;
  byte_buffer(byte_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        head_(std::exchange(o.head_, 0)),
        tail_(std::exchange(o.tail_, 0)),
        cap_(std::exchange(o.cap_, 0)) {}
  byte_buffer& operator=(byte_buffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~byte_buffer() { std::free(data_); }

  char* data() noexcept { return data_ + head_; }
  const char* data() const noexcept { return data_ + head_; }
  std::size_t size() const noexcept { return tail_ - head_; }
  bool empty() const noexcept { return tail_ == head_; }
  std::size_t capacity() const noexcept { return cap_; }
  // Room after the data that prepare() already made.
  std::size_t room() const noexcept { return cap_ - tail_; }

  // Makes at least n bytes of room after the data and returns where it
  // starts; commit() then adds what was written there.
  char* prepare(std::size_t n) {
    if (cap_ - tail_ >= n) return data_ + tail_;
    const std::size_t used = size();
    if (head_ > 0 && cap_ - used >= n) {
      std::memmove(data_, data_ + head_, used);
    } else {
      // Doubling keeps repeated appends linear; a single prepare() for a
      // known frame allocates exactly the frame.
      const std::size_t want = std::max(used + n, std::size_t{cap_} * 2);
      if (want > UINT32_MAX) throw std::bad_alloc();
      char* grown = static_cast<char*>(std::malloc(want));
      if (grown == nullptr) throw std::bad_alloc();
      if (used > 0) std::memcpy(grown, data_ + head_, used);
      std::free(data_);
      data_ = grown;
      cap_ = static_cast<std::uint32_t>(want);
    }
    head_ = 0;
    tail_ = static_cast<std::uint32_t>(used);
    return data_ + tail_;
  }
  void commit(std::size_t n) noexcept {
    tail_ += static_cast<std::uint32_t>(n);
  }

  void append(const char* p, std::size_t n) {
    if (n == 0) return;
    std::memcpy(prepare(n), p, n);
    commit(n);
  }
  // Drops n bytes from the front; the storage stays for reuse.
  void consume(std::size_t n) noexcept {
    head_ += static_cast<std::uint32_t>(n);
    if (head_ == tail_) head_ = tail_ = 0;
  }
  void release() noexcept {
    std::free(std::exchange(data_, nullptr));
    head_ = tail_ = cap_ = 0;
  }
  // Hands the storage, with the data at its start, to the caller, who
  // frees it with std::free(). The buffer is left empty.
  char* detach() noexcept {
    if (head_ > 0) std::memmove(data_, data_ + head_, size());
    char* p = std::exchange(data_, nullptr);
    head_ = tail_ = cap_ = 0;
    return p;
  }
  void swap(byte_buffer& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(head_, o.head_);
    std::swap(tail_, o.tail_);
    std::swap(cap_, o.cap_);
  }

 private:
  char* data_ = nullptr;
  std::uint32_t head_ = 0;
  std::uint32_t tail_ = 0;
  std::uint32_t cap_ = 0;
};

// --- Reading frames through a shared buffer (epoll, libuv) ----------------
//
// A read lands in the buffer the loop shares among its connections, and
// whole frames are echoed straight from there. Only the cut frame at the end
// is copied into the connection's stash. The next read puts the stash back
// in front of the new bytes, or, for a frame bigger than the shared buffer,
// goes straight into the stash so its bytes are copied only once.

struct read_target {
  char* data;
  std::size_t room;
  bool into_stash;
};

inline read_target prepare_read(byte_buffer& stash, std::span<char> shared) {
  if (stash.empty()) return {shared.data(), shared.size(), false};
  const std::size_t have = stash.size();
  const std::size_t frame =
      have >= header_bytes ? header_bytes + load_be32(stash.data()) : 0;
  if (frame > shared.size()) {
    // Read no further than the frame's end, so the stash never holds more
    // than this one frame.
    char* at = stash.prepare(frame - have);
    return {at, frame - have, true};
  }
  std::memcpy(shared.data(), stash.data(), have);
  return {shared.data() + have, shared.size() - have, false};
}

// After n bytes landed at t: all the bytes there are to decode, contiguous.
// The stash still holds its old bytes, so an empty read leaves it intact.
inline std::span<char> landed(byte_buffer& stash, const read_target& t,
                              std::size_t n, std::span<char> shared) {
  if (t.into_stash) {
    stash.commit(n);
    return {stash.data(), stash.size()};
  }
  return shared.first(stash.size() + n);
}

// Once the whole frames of `bytes` have been echoed: keeps the cut frame
// (bytes past s.whole_bytes) for the next read, and frees the stash when
// there is none.
inline void keep_tail(byte_buffer& stash, const read_target& t,
                      std::span<char> bytes, const frame_scan& s,
                      std::size_t shared_size) {
  if (t.into_stash) {
    stash.consume(s.whole_bytes);  // either nothing or the one whole frame
  } else {
    const std::size_t tail = bytes.size() - s.whole_bytes;
    stash.consume(stash.size());
    // A frame that will not fit the shared buffer is completed in the
    // stash: size it for the whole frame once. A smaller one is put back
    // together in the shared buffer, so the stash holds just the tail.
    if (s.next_frame_bytes > shared_size) stash.prepare(s.next_frame_bytes);
    stash.append(bytes.data() + s.whole_bytes, tail);
  }
  if (stash.empty()) stash.release();
}

// main() of each peer: runs `body`; whatever escapes (CLI11's own errors
// are handled inside, so it is mostly std::bad_alloc) ends the program
// with a message, not abort().
inline int guarded_main(const std::string& program, int (*body)(int, char**),
                        int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << program << ": an unknown exception\n";
  }
  return 1;
}

}  // namespace peers
