// What every example's main() does the same way: read --host, --port and
// --threads, print where it listens, and stop on SIGINT or SIGTERM. Only
// the standard library and ionet, so an example copied out of this tree
// (with this header) builds wherever ionet does, MSVC and MinGW included.
//
// Exit statuses, the same for every example: 0 after a stop signal (and
// for --help, --version); 1 when the engine cannot run here (address in
// use, out of memory); 2 when the command line is at fault (an unknown
// flag, a bad value, or an option start() refused: bad_option,
// bad_address).
#pragma once

#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#if !defined(_WIN32)
#include <pthread.h>
#include <signal.h>
#endif

#include "ionet/ionet.hpp"

namespace example {

struct server_flags {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;                        // 0: the OS picks a free port
  std::optional<std::uint32_t> threads;          // unset: the backend's choice
  std::optional<std::uint32_t> max_connections;  // unset: ionet's 10,000
  // --upstream HOST:PORT, for the programs that ask parse_flags() for it.
  std::string upstream_host;
  std::uint16_t upstream_port = 0;
};

// "127.0.0.1:7000" or "[::1]:7000" into host and port; false when it is
// neither (the host is checked by connect(), which wants a literal).
inline bool parse_host_port(std::string_view text, std::string& host,
                            std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view h = text.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string_view::npos) {
    return false;  // an IPv6 address needs its brackets
  }
  std::uint32_t p = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data() + colon + 1, end, p);
  if (ec != std::errc() || ptr != end || p == 0 || p > 65535) return false;
  host = std::string(h);
  port = static_cast<std::uint16_t>(p);
  return true;
}

// The flags' part of the engine's options.
inline void apply(const server_flags& flags, ionet::options& opts) {
  opts.host = flags.host;
  opts.port = flags.port;
  if (flags.threads) opts.threads = *flags.threads;
  if (flags.max_connections) opts.max_connections = *flags.max_connections;
}

// Reads a whole decimal number in [lo, hi]; nullopt for anything else.
inline std::optional<std::uint32_t> parse_number(std::string_view text,
                                                 std::uint32_t lo,
                                                 std::uint32_t hi) {
  std::uint32_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value < lo || value > hi) return {};
  return value;
}

// Fills `flags` from the command line ("--port 80" or "--port=80");
// with `upstream`, --upstream HOST:PORT is accepted, and required.
// Returns the status main() should exit with at once (--help, --version,
// a bad flag), or nullopt to go on and serve.
inline std::optional<int> parse_flags(int argc, char** argv, const char* name,
                                      const char* about, server_flags& flags,
                                      bool upstream = false) {
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::optional<std::string_view> value;
    if (const auto eq = flag.find('='); eq != std::string_view::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (!value && (flag == "--help" || flag == "--version")) {
      if (flag == "--version") {
        std::printf("%s %s\n", name, IONET_VERSION_STRING);
      } else {
        std::printf(
            "usage: %s %s[--host ADDR] [--port N] [--threads N] "
            "[--max-connections N]\n\n%s\n\n%s"
            "  --host ADDR    IPv4 or IPv6 literal to listen on (127.0.0.1)\n"
            "  --port N       TCP port; 0 picks a free one (0)\n"
            "  --threads N    engine threads (the backend's choice)\n"
            "  --max-connections N\n"
            "                 connections open at once; more are refused "
            "(10000)\n"
            "  --help, --version\n\n"
            "Prints 'listening on HOST:PORT' once listening; stops on SIGINT "
            "or SIGTERM.\nExit status: 0 after a signal, 1 when the engine "
            "cannot run (address in use),\n2 on a bad flag or option.\n",
            name, upstream ? "--upstream HOST:PORT " : "", about,
            upstream ? "  --upstream HOST:PORT\n"
                       "                 where to relay each connection "
                       "(an address literal:\n"
                       "                 127.0.0.1:7000, [::1]:7000)\n"
                     : "");
      }
      return 0;
    }
    if (flag != "--host" && flag != "--port" && flag != "--threads" &&
        flag != "--max-connections" && !(upstream && flag == "--upstream")) {
      std::fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", name,
                   argv[i]);
      return 2;
    }
    if (!value) {
      if (i + 1 == argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", name, argv[i]);
        return 2;
      }
      value = argv[++i];
    }
    // start() checks that the host is an address literal.
    if (flag == "--host" && !value->empty()) {
      flags.host = *value;
      continue;
    }
    if (flag == "--port") {
      if (const auto port = parse_number(*value, 0, 65535)) {
        flags.port = static_cast<std::uint16_t>(*port);
        continue;
      }
    }
    if (flag == "--threads") {
      flags.threads = parse_number(*value, 1, 1024);
      if (flags.threads) continue;
    }
    if (flag == "--max-connections") {
      flags.max_connections = parse_number(*value, 1, 1u << 24);
      if (flags.max_connections) continue;
    }
    if (flag == "--upstream" &&
        parse_host_port(*value, flags.upstream_host, flags.upstream_port)) {
      continue;
    }
    std::fprintf(stderr, "%s: bad value '%.*s' for %.*s (see --help)\n", name,
                 static_cast<int>(value->size()), value->data(),
                 static_cast<int>(flag.size()), flag.data());
    return 2;
  }
  if (upstream && flags.upstream_port == 0) {
    std::fprintf(stderr, "%s: --upstream HOST:PORT is required (see --help)\n",
                 name);
    return 2;
  }
  return std::nullopt;
}

// Says why start() failed; returns the exit status for it.
inline int start_failed(const char* name, const ionet::status& st) {
  std::fprintf(stderr, "%s: %s\n", name, st.to_string().c_str());
  const bool usage =
      st.code == ionet::errc::bad_option || st.code == ionet::errc::bad_address;
  return usage ? 2 : 1;
}

// The line scripts wait for: "listening on 127.0.0.1:7000", or
// "listening on [::1]:7000" for IPv6. Flushed, as stdout may be a pipe.
inline void print_listening(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  std::printf("listening on %s%s%s:%u\n", v6 ? "[" : "", host.c_str(),
              v6 ? "]" : "", static_cast<unsigned>(port));
  std::fflush(stdout);
}

// Set when SIGINT or SIGTERM arrives; the program's loop looks at it at
// least every 100 ms.
inline std::atomic<bool> stop_requested{false};

#if defined(_WIN32)
inline void on_stop_signal(int /*signal*/) {
  stop_requested.store(true, std::memory_order_relaxed);
}

inline void stop_on_signals() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}
#else
// POSIX: the signals are blocked on this thread, and so on every thread
// started after (the engine's inherit the mask), and one thread of our own
// takes them with sigwait. No handler runs at an arbitrary point of some
// thread; and under ThreadSanitizer, which defers a handler until its
// thread next enters the runtime, a SIGTERM could otherwise wait forever
// (seen: one in about 70 smoke runs never stopped the server).
// Call it before the engine starts.
inline void stop_on_signals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::thread([stop_signals] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    stop_requested.store(true, std::memory_order_relaxed);
  }).detach();
}
#endif

// For the inline handler model, where the engine's threads do the work:
// the main thread only waits for a stop signal.
inline void wait_for_stop_signal() {
  while (!stop_requested.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace example
