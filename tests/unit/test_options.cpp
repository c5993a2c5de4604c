// Unit tests of common/options.cpp and common/error.cpp: IPv4/IPv6 literal
// parsing, endpoint printing (RFC 5952 for IPv6), option validation that
// names the bad option, and the ionet error category.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <system_error>
#include <vector>

#include "catch.hpp"
#include "common/engine_core.hpp"
#include "ionet/error.hpp"
#include "ionet/events.hpp"
#include "ionet/options.hpp"

namespace {

using ionet::endpoint;
using ionet::detail::parse_address;
using bytes16 = std::array<std::uint8_t, 16>;

endpoint parsed(const std::string& host) {
  endpoint e;
  INFO("host '" << host << "'");
  REQUIRE(parse_address(host, e));
  return e;
}

bytes16 v6(std::initializer_list<std::uint16_t> groups) {
  bytes16 b{};
  std::size_t i = 0;
  for (std::uint16_t g : groups) {
    b[i++] = static_cast<std::uint8_t>(g >> 8);
    b[i++] = static_cast<std::uint8_t>(g & 0xff);
  }
  return b;
}

endpoint v6_endpoint(std::initializer_list<std::uint16_t> groups,
                     std::uint16_t port) {
  endpoint e;
  e.v6 = true;
  e.bytes = v6(groups);
  e.port = port;
  return e;
}

}  // namespace

// --- parse_address
// ------------------------------------------------------------

TEST_CASE("options: parse_address reads IPv4 literals", "[unit][options]") {
  struct good {
    const char* text;
    std::array<std::uint8_t, 4> bytes;
  };
  const good cases[] = {{"127.0.0.1", {127, 0, 0, 1}},
                        {"0.0.0.0", {0, 0, 0, 0}},
                        {"255.255.255.255", {255, 255, 255, 255}},
                        {"10.20.30.40", {10, 20, 30, 40}},
                        {"1.2.3.4", {1, 2, 3, 4}}};
  for (const good& c : cases) {
    INFO(c.text);
    const endpoint e = parsed(c.text);
    CHECK_FALSE(e.v6);
    CHECK(e.bytes[0] == c.bytes[0]);
    CHECK(e.bytes[1] == c.bytes[1]);
    CHECK(e.bytes[2] == c.bytes[2]);
    CHECK(e.bytes[3] == c.bytes[3]);
    for (std::size_t i = 4; i < 16; ++i) CHECK(e.bytes[i] == 0);
  }
}

TEST_CASE("options: parse_address reads IPv6 literals", "[unit][options]") {
  struct good {
    const char* text;
    bytes16 bytes;
  };
  const good cases[] = {
      {"::", v6({0, 0, 0, 0, 0, 0, 0, 0})},
      {"::1", v6({0, 0, 0, 0, 0, 0, 0, 1})},
      {"1::", v6({1, 0, 0, 0, 0, 0, 0, 0})},
      {"fe80::1:2", v6({0xfe80, 0, 0, 0, 0, 0, 1, 2})},
      {"FE80::A:b", v6({0xfe80, 0, 0, 0, 0, 0, 0xa, 0xb})},
      {"::ffff:1.2.3.4", v6({0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304})},
      {"[::1]", v6({0, 0, 0, 0, 0, 0, 0, 1})},
      {"[fe80::1:2]", v6({0xfe80, 0, 0, 0, 0, 0, 1, 2})},
      {"1:2:3:4:5:6:7:8", v6({1, 2, 3, 4, 5, 6, 7, 8})},
      {"2001:0db8:0000:0000:0000:ff00:0042:8329",
       v6({0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329})},
      {"2001:db8::ff00:42:8329",
       v6({0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329})},
      {"1:2:3:4:5:6:7::", v6({1, 2, 3, 4, 5, 6, 7, 0})},  // "::" for one group
      {"::2:3:4:5:6:7:8", v6({0, 2, 3, 4, 5, 6, 7, 8})},
      {"1::8", v6({1, 0, 0, 0, 0, 0, 0, 8})},
      {"1:2:3:4:5:6:1.2.3.4", v6({1, 2, 3, 4, 5, 6, 0x0102, 0x0304})},
      {"::1.2.3.4", v6({0, 0, 0, 0, 0, 0, 0x0102, 0x0304})},
      {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
       v6({0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff})},
  };
  for (const good& c : cases) {
    INFO(c.text);
    const endpoint e = parsed(c.text);
    CHECK(e.v6);
    CHECK(e.bytes == c.bytes);
  }
}

TEST_CASE("options: parse_address refuses what is not a literal",
          "[unit][options]") {
  const char* bad[] = {
      // Required by the issue.
      "1.2.3", "256.1.1.1", "1:2:3:4:5:6:7:8:9", ":::", "abc", "",
      // IPv4
      "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", " 1.2.3.4",
      "1234.1.1.1", "1.2.3.-4", "0x1.2.3.4", "localhost", "1.2.3.4:80",
      // IPv6
      "1::2::3", "1:2:3:4:5:6:7", "1::2:3:4:5:6:7:8", "1:2:3:4::5:6:7:8",
      "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", ":1::", "1:", "1::2:", ":1",
      "12345::", "g::", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6::1.2.3.4",
      "::ffff:1.2.3", "::ffff:256.1.1.1", "::1.2.3.4:5", "1.2.3.4::", "[::1",
      "::1]", "[]", "[", "[::1]:80", "fe80::1%eth0", "::1 "};
  for (const char* text : bad) {
    INFO("host '" << text << "'");
    endpoint e;
    CHECK_FALSE(parse_address(text, e));
  }
}

TEST_CASE("options: parse_address keeps the endpoint's port",
          "[unit][options]") {
  endpoint e;
  e.port = 4242;
  REQUIRE(parse_address("::1", e));
  CHECK(e.port == 4242);
  CHECK(e.v6);
  REQUIRE(parse_address("10.0.0.1", e));
  CHECK(e.port == 4242);
  CHECK_FALSE(e.v6);
  // Switching from IPv6 to IPv4 clears the old bytes.
  for (std::size_t i = 4; i < 16; ++i) CHECK(e.bytes[i] == 0);
}

// --- endpoint::to_string
// ---------------------------------------------------------

TEST_CASE("options: endpoint::to_string prints IPv4 with the port",
          "[unit][options]") {
  endpoint e;
  e.bytes[0] = 127;
  e.bytes[3] = 1;
  e.port = 5000;
  CHECK(e.to_string() == "127.0.0.1:5000");
  CHECK(parsed("255.255.255.255").to_string() == "255.255.255.255:0");
  endpoint z = parsed("0.0.0.0");
  z.port = 65535;
  CHECK(z.to_string() == "0.0.0.0:65535");
}

TEST_CASE("options: endpoint::to_string compresses IPv6 per RFC 5952",
          "[unit][options]") {
  struct expect {
    endpoint e;
    const char* text;
  };
  const expect cases[] = {
      {v6_endpoint({0, 0, 0, 0, 0, 0, 0, 0}, 0), "[::]:0"},
      {v6_endpoint({0, 0, 0, 0, 0, 0, 0, 1}, 5000), "[::1]:5000"},
      {v6_endpoint({1, 0, 0, 0, 0, 0, 0, 0}, 1), "[1::]:1"},
      {v6_endpoint({0xfe80, 0, 0, 0, 0, 0, 1, 2}, 80), "[fe80::1:2]:80"},
      // 4.1: no leading zeros. 4.3: lower case.
      {v6_endpoint({0x2001, 0xdb8, 0, 0, 0, 0, 2, 1}, 443),
       "[2001:db8::2:1]:443"},
      {v6_endpoint({0x2001, 0xdb8, 0xabcd, 0xef, 1, 0x10, 0x100, 0x1000}, 9),
       "[2001:db8:abcd:ef:1:10:100:1000]:9"},
      // 4.2.2: a single 0 group is not compressed.
      {v6_endpoint({0x2001, 0xdb8, 0, 1, 1, 1, 1, 1}, 9),
       "[2001:db8:0:1:1:1:1:1]:9"},
      {v6_endpoint({1, 0, 2, 0, 3, 0, 4, 0}, 9), "[1:0:2:0:3:0:4:0]:9"},
      // 4.2.1: the longest run is compressed...
      {v6_endpoint({1, 0, 0, 2, 0, 0, 0, 3}, 9), "[1:0:0:2::3]:9"},
      {v6_endpoint({0, 0, 1, 0, 0, 0, 0, 0}, 9), "[0:0:1::]:9"},
      // 4.2.3: ...and of equal runs, the first.
      {v6_endpoint({0x2001, 0xdb8, 0, 0, 1, 0, 0, 1}, 9),
       "[2001:db8::1:0:0:1]:9"},
      {v6_endpoint({1, 0, 0, 2, 3, 0, 0, 4}, 9), "[1::2:3:0:0:4]:9"},
      // No zero groups at all; all ones.
      {v6_endpoint({1, 2, 3, 4, 5, 6, 7, 8}, 9), "[1:2:3:4:5:6:7:8]:9"},
      {v6_endpoint(
           {0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff},
           65535),
       "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
      // Runs of 7 at either end.
      {v6_endpoint({0, 0, 0, 0, 0, 0, 0, 0xa}, 9), "[::a]:9"},
      {v6_endpoint({0xa, 0, 0, 0, 0, 0, 0, 0}, 9), "[a::]:9"},
      {v6_endpoint({0, 1, 0, 0, 0, 0, 0, 0}, 9), "[0:1::]:9"},
  };
  for (const expect& c : cases) {
    CHECK(c.e.to_string() == c.text);
  }
}

TEST_CASE("options: IPv6 text survives parse and print", "[unit][options]") {
  const char* canonical[] = {"::",          "::1",
                             "1::",         "fe80::1:2",
                             "2001:db8::1", "2001:db8:0:1:1:1:1:1",
                             "1:0:0:2::3",  "1:2:3:4:5:6:7:8"};
  for (const char* text : canonical) {
    endpoint e = parsed(text);
    e.port = 1;
    CHECK(e.to_string() == "[" + std::string(text) + "]:1");
  }
  // Non-canonical input prints canonically.
  endpoint e = parsed("2001:0DB8:0000:0000:0000:0000:0000:0001");
  e.port = 2;
  CHECK(e.to_string() == "[2001:db8::1]:2");
}

TEST_CASE("options: an IPv4-mapped address prints in mixed notation",
          "[unit][options]") {
  // RFC 5952 section 5 recommends "::ffff:1.2.3.4" for IPv4-mapped
  // addresses, which is what a dual-stack listener on "::" sees for every
  // IPv4 client (inet_ntop prints it so too).
  endpoint e = parsed("::ffff:1.2.3.4");
  e.port = 80;
  CHECK(e.to_string() == "[::ffff:1.2.3.4]:80");
  endpoint lo = parsed("::ffff:127.0.0.1");
  lo.port = 5000;
  CHECK(lo.to_string() == "[::ffff:127.0.0.1]:5000");
}

// --- validate
// ----------------------------------------------------------------------

TEST_CASE("options: the defaults are valid", "[unit][options]") {
  ionet::options o;
  endpoint bound;
  const ionet::status s = ionet::detail::validate(o, &bound);
  CHECK(s.ok());
  CHECK(static_cast<bool>(s));
  CHECK_FALSE(s.code);
  CHECK(s.to_string() == "ok");
  CHECK(bound.to_string() == "127.0.0.1:0");
  CHECK(ionet::detail::validate(o).ok());  // bound is optional
}

TEST_CASE("options: validate fills the bound endpoint", "[unit][options]") {
  ionet::options o;
  o.host = "::";
  o.port = 8080;
  endpoint bound;
  REQUIRE(ionet::detail::validate(o, &bound).ok());
  CHECK(bound.v6);
  CHECK(bound.port == 8080);
  CHECK(bound.to_string() == "[::]:8080");
  o.host = "[::1]";
  REQUIRE(ionet::detail::validate(o, &bound).ok());
  CHECK(bound.to_string() == "[::1]:8080");
}

TEST_CASE("options: validate refuses each bad option and names it",
          "[unit][options]") {
  struct bad {
    const char* name;  // must appear in the message
    void (*mutate)(ionet::options&);
  };
  const bad cases[] = {
      {"max_connections", [](ionet::options& o) { o.max_connections = 0; }},
      {"max_connections",
       [](ionet::options& o) { o.max_connections = (1u << 24) + 1; }},
      {"accept_depth", [](ionet::options& o) { o.accept_depth = 0; }},
      {"accept_depth", [](ionet::options& o) { o.accept_depth = 65537; }},
      {"backlog", [](ionet::options& o) { o.backlog = 0; }},
      {"slice_bytes", [](ionet::options& o) { o.slice_bytes = 0; }},
      {"slice_bytes", [](ionet::options& o) { o.slice_bytes = 15; }},
      {"slice_bytes",
       [](ionet::options& o) { o.slice_bytes = (1u << 20) + 1; }},
      {"max_message_bytes", [](ionet::options& o) { o.max_message_bytes = 0; }},
      {"max_message_bytes",
       [](ionet::options& o) {
         o.max_message_bytes = (1u << 30) + 1;
         o.max_queued_bytes = 0xffffffffu;
       }},
      {"max_queued_bytes",
       [](ionet::options& o) {
         o.max_message_bytes = 4096;
         o.max_queued_bytes = 4096 + 3;
       }},
      {"max_queued_bytes", [](ionet::options& o) { o.max_queued_bytes = 0; }},
      {"threads", [](ionet::options& o) { o.threads = 0; }},
      {"threads", [](ionet::options& o) { o.threads = 257; }},
      {"pool_slices",
       [](ionet::options& o) {
         o.slice_bytes = 512;
         o.max_message_bytes = 1u << 20;
         o.pool_slices = 2048;  // one largest message needs 2049
       }},
      {"pool_slices", [](ionet::options& o) { o.pool_slices = 1; }},
      {"event_queue_capacity",
       [](ionet::options& o) { o.event_queue_capacity = 0; }},
      {"send_low_water",
       [](ionet::options& o) { o.send_low_water = o.max_queued_bytes; }},
      {"mode",
       [](ionet::options& o) { o.mode = static_cast<ionet::framing>(7); }},
  };
  for (const bad& c : cases) {
    ionet::options o;
    c.mutate(o);
    const ionet::status s = ionet::detail::validate(o);
    INFO(c.name << ": " << s.to_string());
    CHECK_FALSE(s.ok());
    CHECK(s.code == ionet::errc::bad_option);
    CHECK_THAT(s.message, Catch::Matchers::ContainsSubstring(c.name));
    CHECK_THAT(s.to_string(), Catch::Matchers::StartsWith("bad_option: "));
  }
}

TEST_CASE("options: validate accepts the edges of each range",
          "[unit][options]") {
  const std::vector<void (*)(ionet::options&)> edges = {
      [](ionet::options& o) { o.max_connections = 1; },
      [](ionet::options& o) { o.send_low_water = 0; },
      [](ionet::options& o) { o.send_low_water = o.max_queued_bytes - 1; },
      [](ionet::options& o) { o.max_connections = 1u << 24; },
      [](ionet::options& o) { o.accept_depth = 1; },
      [](ionet::options& o) { o.accept_depth = 65536; },
      [](ionet::options& o) { o.backlog = 1; },
      [](ionet::options& o) { o.slice_bytes = 16; },
      [](ionet::options& o) { o.slice_bytes = 1u << 20; },
      [](ionet::options& o) { o.max_message_bytes = 1; },
      [](ionet::options& o) {
        o.max_message_bytes = 1u << 30;
        o.max_queued_bytes = (1u << 30) + 4;
      },
      [](ionet::options& o) {
        o.max_message_bytes = 4096;
        o.max_queued_bytes = 4096 + 4;
      },
      [](ionet::options& o) { o.threads = 1; },
      [](ionet::options& o) { o.threads = 256; },
      [](ionet::options& o) {
        o.slice_bytes = 512;
        o.max_message_bytes = 1u << 20;
        o.pool_slices = 2049;
      },
      [](ionet::options& o) { o.event_queue_capacity = 1; },
      [](ionet::options& o) { o.mode = ionet::framing::raw; },
      [](ionet::options& o) { o.port = 65535; },
  };
  int i = 0;
  for (auto mutate : edges) {
    ionet::options o;
    mutate(o);
    const ionet::status s = ionet::detail::validate(o);
    INFO("edge " << i++ << ": " << s.to_string());
    CHECK(s.ok());
  }
}

TEST_CASE("options: validate refuses a bad host with bad_address",
          "[unit][options]") {
  for (const char* host : {"", "localhost", "1.2.3", "256.1.1.1", ":::", "abc",
                           "1:2:3:4:5:6:7:8:9", "example.com"}) {
    ionet::options o;
    o.host = host;
    const ionet::status s = ionet::detail::validate(o);
    INFO("host '" << host << "': " << s.to_string());
    CHECK(s.code == ionet::errc::bad_address);
    CHECK_THAT(s.message, Catch::Matchers::ContainsSubstring("host"));
    CHECK_THAT(s.message, Catch::Matchers::ContainsSubstring(
                              "'" + std::string(host) + "'"));
  }
}

// --- errors
// -------------------------------------------------------------------------

TEST_CASE("options: the error category names every errc",
          "[unit][options][error]") {
  const std::error_category& cat = ionet::error_category();
  CHECK(std::string(cat.name()) == "ionet");
  CHECK(&cat == &ionet::error_category());  // one instance
  struct named {
    ionet::errc e;
    const char* text;
  };
  const named all[] = {{ionet::errc::stale_connection, "stale_connection"},
                       {ionet::errc::queue_full, "queue_full"},
                       {ionet::errc::message_too_large, "message_too_large"},
                       {ionet::errc::pool_exhausted, "pool_exhausted"},
                       {ionet::errc::closing, "closing"},
                       {ionet::errc::not_running, "not_running"},
                       {ionet::errc::already_running, "already_running"},
                       {ionet::errc::bad_option, "bad_option"},
                       {ionet::errc::address_in_use, "address_in_use"},
                       {ionet::errc::bad_address, "bad_address"},
                       {ionet::errc::out_of_memory, "out_of_memory"},
                       {ionet::errc::unsupported, "unsupported"},
                       {ionet::errc::closed_by_user, "closed_by_user"},
                       {ionet::errc::peer_closed, "peer_closed"},
                       {ionet::errc::connection_reset, "connection_reset"},
                       {ionet::errc::engine_stopped, "engine_stopped"},
                       {ionet::errc::idle_timeout, "idle_timeout"},
                       {ionet::errc::read_timeout, "read_timeout"},
                       {ionet::errc::write_timeout, "write_timeout"}};
  for (const named& n : all) {
    const std::error_code ec = n.e;  // implicit: errc is an error code enum
    CHECK(ec);
    CHECK(&ec.category() == &cat);
    CHECK(ec == n.e);
    CHECK(ec.message() == n.text);
  }
  CHECK(cat.message(999) == "unknown ionet error 999");
  // Other categories' codes do not compare equal to ionet's.
  CHECK(std::make_error_code(std::errc::timed_out) !=
        ionet::errc::stale_connection);
  CHECK(ionet::make_error_code(ionet::errc::queue_full) !=
        ionet::make_error_code(ionet::errc::pool_exhausted));
}

TEST_CASE("options: status carries a code and a sentence",
          "[unit][options][error]") {
  const ionet::status ok;
  CHECK(ok.ok());
  CHECK(ok.to_string() == "ok");
  const ionet::status bad(ionet::errc::bad_option,
                          "slice_bytes must be at least 16 (got 0)");
  CHECK_FALSE(bad.ok());
  CHECK_FALSE(static_cast<bool>(bad));
  CHECK(bad.to_string() ==
        "bad_option: slice_bytes must be at least 16 (got 0)");
  const ionet::status bare(ionet::errc::address_in_use);
  CHECK(bare.to_string() == "address_in_use");
  const ionet::status native(std::make_error_code(std::errc::timed_out),
                             "waited");
  CHECK(native.code == std::errc::timed_out);
  CHECK_FALSE(native.ok());
}

TEST_CASE("options: timeouts, keepalive and the total queue cap are checked",
          "[unit][options]") {
  using namespace std::chrono_literals;
  auto refused = [](const ionet::options& o, const char* name) {
    const ionet::status s = ionet::detail::validate(o);
    INFO(s.to_string());
    CHECK(s.code == ionet::errc::bad_option);
    CHECK(s.message.find(name) != std::string::npos);
  };
  ionet::options o;
  o.idle_timeout = -1ms;
  refused(o, "idle_timeout");
  o = {};
  o.read_timeout = std::chrono::hours(24 * 30);
  refused(o, "read_timeout");
  o = {};
  o.keepalive_interval = 0s;
  refused(o, "keepalive_interval");
  o = {};
  o.keepalive_probes = 0;
  refused(o, "keepalive_probes");
  o = {};
  o.max_total_queued_bytes = o.max_queued_bytes - 1;
  refused(o, "max_total_queued_bytes");

  // Off is fine: zero timeouts, no keepalive (then its interval is unused).
  o = {};
  o.idle_timeout = o.read_timeout = o.write_timeout = 0ms;
  o.keepalive_idle = 0s;
  o.keepalive_interval = 0s;
  CHECK(ionet::detail::validate(o).ok());
}
