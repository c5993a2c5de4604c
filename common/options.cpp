// Option checks and address text, shared by every backend.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/engine_core.hpp"

namespace ionet {

std::string endpoint::to_string() const {
  char buf[64];
  if (!v6) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u:%u", bytes[0], bytes[1],
                  bytes[2], bytes[3], port);
    return buf;
  }
  // RFC 5952 section 5: an IPv4-mapped address (what a dual-stack
  // listener sees for every IPv4 client) prints in mixed notation.
  static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                              0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(bytes.data(), mapped, sizeof mapped) == 0) {
    std::snprintf(buf, sizeof buf, "[::ffff:%u.%u.%u.%u]:%u", bytes[12],
                  bytes[13], bytes[14], bytes[15], port);
    return buf;
  }
  // RFC 5952: lower-case hex, the longest run (>= 2) of zero groups as "::".
  std::uint16_t g[8];
  for (std::size_t i = 0; i < 8; ++i) {
    g[i] = static_cast<std::uint16_t>(bytes[2 * i] << 8 | bytes[2 * i + 1]);
  }
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  std::string s = "[";
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      s += "::";
      i += best_len - 1;
      continue;
    }
    if (!s.empty() && s.back() != '[' && s.back() != ':') s += ':';
    std::snprintf(buf, sizeof buf, "%x", g[i]);
    s += buf;
  }
  s += "]:" + std::to_string(port);
  return s;
}

namespace detail {
namespace {

bool parse_v4(const char* p, const char* end, std::uint8_t* out) {
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (p == end || *p != '.') return false;
      ++p;
    }
    unsigned value = 0;
    int digits = 0;
    while (p != end && *p >= '0' && *p <= '9') {
      value = value * 10 + static_cast<unsigned>(*p - '0');
      if (++digits > 3 || value > 255) return false;
      ++p;
    }
    if (digits == 0) return false;
    out[part] = static_cast<std::uint8_t>(value);
  }
  return p == end;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_v6(const char* p, const char* end, std::uint8_t* out) {
  std::uint8_t bytes[16] = {};
  int n = 0;     // bytes written
  int gap = -1;  // where "::" stands, in bytes
  if (end - p >= 2 && p[0] == ':' && p[1] == ':') {
    gap = 0;
    p += 2;
  } else if (p != end && *p == ':') {
    return false;
  }
  while (p != end) {
    // An embedded IPv4 tail ("::ffff:1.2.3.4").
    const char* q = p;
    while (q != end && *q != ':' && *q != '.') ++q;
    if (q != end && *q == '.') {
      if (n > 12) return false;
      if (!parse_v4(p, end, bytes + n)) return false;
      n += 4;
      break;
    }
    unsigned value = 0;
    int digits = 0;
    while (p != end && hex_value(*p) >= 0) {
      value = value * 16 + static_cast<unsigned>(hex_value(*p));
      if (++digits > 4) return false;
      ++p;
    }
    if (digits == 0 || n > 14) return false;
    bytes[n++] = static_cast<std::uint8_t>(value >> 8);
    bytes[n++] = static_cast<std::uint8_t>(value);
    if (p == end) break;
    if (*p != ':') return false;
    ++p;
    if (p != end && *p == ':') {
      if (gap >= 0) return false;
      gap = n;
      ++p;
    } else if (p == end) {
      return false;  // trailing single ':'
    }
  }
  if (gap < 0) {
    if (n != 16) return false;
  } else {
    if (n > 14) return false;
    const int tail = n - gap;
    for (int i = 0; i < tail; ++i) bytes[15 - i] = bytes[n - 1 - i];
    for (int i = gap; i < 16 - tail; ++i) bytes[i] = 0;
  }
  for (int i = 0; i < 16; ++i) out[i] = bytes[i];
  return true;
}

}  // namespace

bool parse_address(const std::string& host, endpoint& out) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']')
    h = h.substr(1, h.size() - 2);
  const char* p = h.data();
  const char* end = p + h.size();
  endpoint e;
  if (h.find(':') != std::string::npos) {
    if (!parse_v6(p, end, e.bytes.data())) return false;
    e.v6 = true;
  } else if (!parse_v4(p, end, e.bytes.data())) {
    return false;
  }
  e.port = out.port;
  out = e;
  return true;
}

status validate(const options& o, endpoint* bound) {
  auto bad = [](const char* name, const std::string& why, std::uint64_t got) {
    return status{errc::bad_option, std::string(name) + " " + why + " (got " +
                                        std::to_string(got) + ")"};
  };
  endpoint ep;
  if (o.listen && !parse_address(o.host, ep)) {
    return {errc::bad_address,
            "host '" + o.host + "' is not an IPv4 or IPv6 address literal"};
  }
  ep.port = o.port;
  if (o.max_connections == 0 || o.max_connections > (1u << 24)) {
    return bad("max_connections", "must be between 1 and 16777216",
               o.max_connections);
  }
  if (o.accept_depth == 0 || o.accept_depth > 65536) {
    return bad("accept_depth", "must be between 1 and 65536", o.accept_depth);
  }
  if (o.backlog == 0) return bad("backlog", "must be at least 1", o.backlog);
  if (o.slice_bytes < 16 || o.slice_bytes > (1u << 20)) {
    return bad("slice_bytes", "must be between 16 and 1048576", o.slice_bytes);
  }
  if (o.max_message_bytes == 0 || o.max_message_bytes > (1u << 30)) {
    return bad("max_message_bytes", "must be between 1 and 1073741824",
               o.max_message_bytes);
  }
  if (std::uint64_t{o.max_queued_bytes} <
      std::uint64_t{o.max_message_bytes} + 4) {
    return bad("max_queued_bytes",
               "must be at least max_message_bytes + 4 (" +
                   std::to_string(std::uint64_t{o.max_message_bytes} + 4) +
                   ") so one whole message can be queued",
               o.max_queued_bytes);
  }
  if (o.send_low_water && *o.send_low_water >= o.max_queued_bytes) {
    return bad("send_low_water",
               "must be below max_queued_bytes (" +
                   std::to_string(o.max_queued_bytes) +
                   "), or unset for a quarter of it",
               *o.send_low_water);
  }
  if (o.threads == 0 ||
      (o.threads > 256 && o.threads != options::backend_default)) {
    return bad("threads", "must be between 1 and 256", o.threads);
  }
  if (o.pool_slices != 0) {
    const std::uint64_t need =
        (std::uint64_t{o.max_message_bytes} + 4 + o.slice_bytes - 1) /
        o.slice_bytes;
    if (o.pool_slices < need) {
      return bad("pool_slices",
                 "must hold one largest message (" + std::to_string(need) +
                     " slices), or be 0 for automatic sizing",
                 o.pool_slices);
    }
  }
  constexpr std::int64_t max_timeout_ms = 24LL * 24 * 3600 * 1000;  // 24 days
  for (auto [name, t] : {std::pair{"idle_timeout", o.idle_timeout},
                         std::pair{"read_timeout", o.read_timeout},
                         std::pair{"write_timeout", o.write_timeout},
                         std::pair{"connect_timeout", o.connect_timeout}}) {
    if (t.count() < 0 || t.count() > max_timeout_ms) {
      return {errc::bad_option,
              std::string(name) + " must be between 0 (off) and 24 days (got " +
                  std::to_string(t.count()) + " ms)"};
    }
  }
  if (o.keepalive_idle.count() < 0 || o.keepalive_idle.count() > 86400) {
    return bad("keepalive_idle", "must be between 0 (off) and 86400 s",
               static_cast<std::uint64_t>(o.keepalive_idle.count()));
  }
  if (o.keepalive_idle.count() > 0 && (o.keepalive_interval.count() < 1 ||
                                       o.keepalive_interval.count() > 3600)) {
    return bad("keepalive_interval", "must be between 1 and 3600 s",
               static_cast<std::uint64_t>(o.keepalive_interval.count()));
  }
  if (o.keepalive_idle.count() > 0 &&
      (o.keepalive_probes < 1 || o.keepalive_probes > 100)) {
    return bad("keepalive_probes", "must be between 1 and 100",
               o.keepalive_probes);
  }
  if (o.max_total_queued_bytes != 0 &&
      o.max_total_queued_bytes < o.max_queued_bytes) {
    return bad("max_total_queued_bytes",
               "must be 0 (automatic) or at least max_queued_bytes (" +
                   std::to_string(o.max_queued_bytes) + ")",
               o.max_total_queued_bytes);
  }
  if (o.event_queue_capacity == 0) {
    return bad("event_queue_capacity", "must be at least 1", 0);
  }
  if (o.mode != framing::length_prefix && o.mode != framing::raw) {
    return bad("mode", "must be length_prefix or raw",
               static_cast<unsigned>(o.mode));
  }
  if (bound) *bound = ep;
  return {};
}

}  // namespace detail
}  // namespace ionet
