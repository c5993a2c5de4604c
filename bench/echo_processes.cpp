// ionet-echo --processes N: N worker processes share one port through
// SO_REUSEPORT, each with its own engine; this parent supervises them.
// It is what a user does past one process's open-file limit on one host
// (here: 20,000 files per process, so 65,000 connections need 4 workers).
//
// The parent reserves the port (bound, never listening, so the kernel
// sends it no connection), forks the workers with their stdout on a pipe,
// prints one `listening on HOST:PORT` once every worker listens, forwards
// SIGINT/SIGTERM, and prints one JSON object that sums the workers' stats.
#include "echo_processes.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

namespace ionet_bench {
namespace {

// nlohmann::json's destructor may allocate (it flattens nested values), so
// clang-tidy says every struct holding one may throw from its destructor:
// that is json's, not ours.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct worker {
  pid_t pid = -1;
  int out = -1;  // read end of its stdout
  std::string buffer;
  bool listening = false;
  nlohmann::json stats;
  int status = 0;
};

// Binds (does not listen) a SO_REUSEPORT socket to host:port so the port
// stays ours while the workers bind it too. Returns the fd, sets `port`.
int reserve_port(const std::string& host, std::uint16_t& port,
                 std::string& why) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[') h = h.substr(1, h.size() - 2);
  if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
  } else {
    why = "--host '" + host + "' is not an IPv4 or IPv6 literal";
    return -1;
  }
  const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    why = std::string("cannot bind ") + host + ":" + std::to_string(port) +
          ": " + std::system_category().message(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  port = ntohs(bound.ss_family == AF_INET6
                   ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                   : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

// Adds every number of `from` into `into`, recursively.
void add_numbers(nlohmann::json& into, const nlohmann::json& from) {
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (it->is_number_unsigned()) {
      into[it.key()] =
          into.value(it.key(), std::uint64_t{0}) + it->get<std::uint64_t>();
    } else if (it->is_number()) {
      into[it.key()] = into.value(it.key(), 0.0) + it->get<double>();
    } else if (it->is_object()) {
      add_numbers(into[it.key()], *it);
    }
  }
}

// Takes whole lines from the worker's pipe; false at EOF.
bool read_lines(worker& w) {
  char buf[4096];
  const ssize_t n = read(w.out, buf, sizeof buf);
  if (n <= 0) return false;
  w.buffer.append(buf, static_cast<std::size_t>(n));
  std::size_t eol;
  while ((eol = w.buffer.find('\n')) != std::string::npos) {
    const std::string line = w.buffer.substr(0, eol);
    w.buffer.erase(0, eol + 1);
    if (line.rfind("listening on ", 0) == 0) {
      w.listening = true;
    } else if (!line.empty() && line.front() == '{') {
      w.stats = nlohmann::json::parse(line, nullptr, false);
    }
  }
  return true;
}

}  // namespace

int run_processes(unsigned processes, ionet::options opts,
                  const std::string& shown_host, const std::atomic<int>& stop,
                  const serve_fn& serve) {
  std::string why;
  std::uint16_t port = opts.port;
  const int holder = reserve_port(opts.host, port, why);
  if (holder < 0) {
    std::cerr << "ionet-echo: " << why << "\n";
    return 2;
  }
  opts.port = port;
  opts.reuse_port = true;

  std::vector<worker> workers(processes);
  for (auto& w : workers) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      std::cerr << "ionet-echo: pipe: " << std::system_category().message(errno)
                << "\n";
      return 1;
    }
    std::cout.flush();
    const pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      close(holder);
      dup2(fds[1], STDOUT_FILENO);
      _exit(serve(opts));
    }
    close(fds[1]);
    w.pid = pid;
    w.out = fds[0];
  }
  std::cerr << "ionet-echo: workers";
  for (auto& w : workers) std::cerr << " " << w.pid;
  std::cerr << "\n";

  bool announced = false;
  bool stopping = false;
  bool failed = false;
  std::size_t open = workers.size();
  while (open > 0) {
    if (!stopping && stop.load(std::memory_order_relaxed)) {
      stopping = true;
      for (auto& w : workers) kill(w.pid, SIGTERM);
    }
    std::vector<pollfd> fds;
    for (auto& w : workers) {
      if (w.out >= 0) fds.push_back({w.out, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) break;
    for (auto& w : workers) {
      if (w.out < 0) continue;
      pollfd* p = nullptr;
      for (auto& f : fds) {
        if (f.fd == w.out) p = &f;
      }
      if (!p || !(p->revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (!read_lines(w)) {
        close(w.out);
        w.out = -1;
        --open;
        waitpid(w.pid, &w.status, 0);
        if (!stopping) {
          std::cerr << "ionet-echo: worker " << w.pid
                    << " ended on its own (status " << w.status
                    << "); stopping the others\n";
          failed = stopping = true;
          for (auto& other : workers) {
            if (other.out >= 0) kill(other.pid, SIGTERM);
          }
        }
      }
    }
    if (!announced && !stopping) {
      bool all = true;
      for (auto& w : workers) all = all && w.listening;
      if (all) {
        announced = true;
        close(holder);  // the workers hold the port now
        std::cout << "listening on " << shown_host << ":" << port << std::endl;
      }
    }
  }
  if (!announced) close(holder);

  nlohmann::json total = {{"processes", processes},
                          {"engine", nlohmann::json::object()},
                          {"echo", nlohmann::json::object()}};
  nlohmann::json per = nlohmann::json::array();
  for (auto& w : workers) {
    if (w.stats.is_object()) {
      total["backend"] = w.stats.value("backend", "");
      total["framing"] = w.stats.value("framing", "");
      add_numbers(total["engine"],
                  w.stats.value("engine", nlohmann::json::object()));
      add_numbers(total["echo"],
                  w.stats.value("echo", nlohmann::json::object()));
    } else {
      failed = true;
    }
    per.push_back({{"pid", w.pid},
                   {"exit", WIFEXITED(w.status) ? WEXITSTATUS(w.status) : -1}});
    if (!WIFEXITED(w.status) || WEXITSTATUS(w.status) != 0) failed = true;
  }
  total["workers"] = per;
  std::cout << total.dump() << std::endl;
  return failed ? 1 : 0;
}

}  // namespace ionet_bench
