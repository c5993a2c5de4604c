// ionet-echo --processes: worker processes sharing a port (Linux).
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "ionet/options.hpp"

namespace ionet_bench {

// Serves on the options given (port fixed, reuse_port set) until stopped;
// returns the process's exit code. Runs in each forked worker.
using serve_fn = std::function<int(const ionet::options&)>;

// Forks `processes` workers running `serve`, prints `listening on
// <shown_host>:PORT` when all listen, forwards a stop (`stop` turns
// non-zero) as SIGTERM, and prints the workers' stats summed as one JSON
// object. Returns 0 when every worker ended cleanly.
int run_processes(unsigned processes, ionet::options opts,
                  const std::string& shown_host, const std::atomic<int>& stop,
                  const serve_fn& serve);

}  // namespace ionet_bench
