// winsim: the fault schedule. Every fault is off unless
// IONET_WINSIM_FAULTS turns it on:
//   IONET_WINSIM_FAULTS=benign            reorder,delay,any_worker,inline_pend
//   IONET_WINSIM_FAULTS=all               every fault
//   IONET_WINSIM_FAULTS=reorder,reset_read:0.01   a list, each with its rate
// IONET_WINSIM_FAULT_RATE is the rate of those given without one (default
// 0.1). IONET_WINSIM_SEED picks the seed (default: from the clock), which
// is printed once, when a fault is first decided.
//
// A decision is a hash of (seed, fault, key, counter), where the key is a
// socket's or a port's serial and the counter counts that fault's
// decisions there: the same seed makes the same decisions, and a different
// thread timing changes only the decisions whose keys it reorders.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim.hpp"

namespace winsim {
namespace {

constexpr int fault_count = static_cast<int>(fault::count);
constexpr const char* names[fault_count] = {
    "reorder",        "delay",
    "any_worker",     "inline_pend",
    "enobufs_accept", "enobufs_send",
    "reset_read",     "netname_read",
    "wouldblock_io",  "post_fail",
    "non_ifs",        "fd_accept_once",
    "reset_accept",   "update_context_fail",
    "netdown_accept", "wine_disconnect",
    "refuse_connect", "unreachable_connect",
    "silent_connect"};
constexpr int benign_count = 4;  // the first four

struct schedule {
  std::uint64_t seed = 0;
  double rate[fault_count] = {};
  bool any = false;
};

[[noreturn]] void bad(const std::string& what) {
  std::fprintf(stderr, "winsim: IONET_WINSIM_FAULTS: %s\n", what.c_str());
  std::fprintf(stderr, "winsim: faults are benign, all, none or a list of:");
  for (const char* n : names) std::fprintf(stderr, " %s", n);
  std::fprintf(stderr, " (each optionally name:rate)\n");
  std::abort();
}

schedule load() {
  schedule s;
  const char* seed = std::getenv("IONET_WINSIM_SEED");
  s.seed =
      seed && *seed
          ? std::strtoull(seed, nullptr, 10)
          : static_cast<std::uint64_t>(
                std::chrono::system_clock::now().time_since_epoch().count()) %
                1000000007ull;
  double fallback = 0.1;
  if (const char* r = std::getenv("IONET_WINSIM_FAULT_RATE"); r && *r)
    fallback = std::atof(r);
  const char* list = std::getenv("IONET_WINSIM_FAULTS");
  std::string all = list ? list : "";
  std::size_t at = 0;
  while (at < all.size()) {
    std::size_t end = all.find(',', at);
    if (end == std::string::npos) end = all.size();
    std::string item = all.substr(at, end - at);
    at = end + 1;
    if (item.empty() || item == "none") continue;
    double rate = fallback;
    if (auto colon = item.find(':'); colon != std::string::npos) {
      rate = std::atof(item.c_str() + colon + 1);
      item.resize(colon);
    }
    if (item == "benign" || item == "all") {
      const int n = item == "all" ? fault_count : benign_count;
      for (int f = 0; f < n; ++f) s.rate[f] = rate;
      continue;
    }
    int f = 0;
    while (f < fault_count && item != names[f]) ++f;
    if (f == fault_count) bad("unknown fault '" + item + "'");
    s.rate[f] = rate;
  }
  for (double r : s.rate) s.any = s.any || r > 0;
  return s;
}

const schedule& config() {
  static const schedule s = load();
  return s;
}

std::uint64_t mix(std::uint64_t x) {
  // splitmix64's finalizer.
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t decide(fault f, std::uint64_t key, std::uint64_t counter,
                     std::uint64_t salt) {
  static std::atomic<bool> told{false};
  const schedule& s = config();
  if (!told.exchange(true)) {
    std::fprintf(stderr,
                 "winsim: seed %llu (IONET_WINSIM_SEED=%llu replays it)\n",
                 static_cast<unsigned long long>(s.seed),
                 static_cast<unsigned long long>(s.seed));
  }
  std::uint64_t h =
      mix(s.seed ^ mix(static_cast<std::uint64_t>(f) * 0x100 + salt));
  h = mix(h ^ mix(key));
  return mix(h ^ counter);
}

}  // namespace

bool enabled(fault f) noexcept {
  return config().rate[static_cast<int>(f)] > 0;
}

bool roll(fault f, std::uint64_t key, std::uint64_t counter) noexcept {
  const double rate = config().rate[static_cast<int>(f)];
  if (rate <= 0) return false;
  return static_cast<double>(decide(f, key, counter, 0) >> 11) * 0x1.0p-53 <
         rate;
}

std::uint64_t pick(fault f, std::uint64_t key, std::uint64_t counter,
                   std::uint64_t n) noexcept {
  return n ? decide(f, key, counter, 1) % n : 0;
}

}  // namespace winsim
