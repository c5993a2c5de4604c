// A length header above max_message_bytes closes that connection with
// reason message_too_large; the other connections carry on echoing.
#include "support.hpp"

using namespace ionet_test;

TEST_CASE(
    "oversized: a length header above the limit closes only that connection",
    "[conformance][oversized]") {
  constexpr std::uint32_t limit = 4096;
  ionet::options o = local_options();
  o.max_message_bytes = limit;
  server s(o);
  REQUIRE(s.start().ok());

  std::string why;
  ionet::framed_client good1, good2, bad_by_one, bad_huge;
  REQUIRE(connect_one(s, good1, why));
  REQUIRE(connect_one(s, good2, why));
  const auto id_by_one = connect_one(s, bad_by_one, why);
  const auto id_huge = connect_one(s, bad_huge, why);
  INFO(why);
  REQUIRE(id_by_one);
  REQUIRE(id_huge);

  CHECK_FALSE(
      echo_roundtrip(good1, pattern(limit, 1)));  // the limit itself is fine
  CHECK_FALSE(echo_roundtrip(good2, pattern(10, 2)));

  // One byte too many, with some payload behind the header.
  {
    std::vector<std::byte> f(4 + 100);
    put_u32be(f.data(), limit + 1);
    fill_pattern(std::span(f).subspan(4), 3);
    REQUIRE_FALSE(bad_by_one.write_raw(f));
  }
  // A header alone announcing 4 GiB - 1: must not be allocated, just refused.
  {
    std::byte h[4];
    put_u32be(h, 0xffffffffu);
    REQUIRE_FALSE(bad_huge.write_raw(h));
  }

  REQUIRE(s.wait_closed_id(*id_by_one));
  REQUIRE(s.wait_closed_id(*id_huge));
  const record r = s.snapshot();
  CHECK(r.closed_of(*id_by_one)->reason == ionet::errc::message_too_large);
  CHECK(r.closed_of(*id_huge)->reason == ionet::errc::message_too_large);
  CHECK(r.closed.size() == 2);  // the good ones are still open
  CHECK(r.messages == 2);       // no message came from the bad frames

  // The offenders see their connection end (EOF or reset), not silence.
  const std::error_code e1 = read_until_closed(bad_by_one);
  const std::error_code e2 = read_until_closed(bad_huge);
  CHECK(e1);
  CHECK_FALSE(is_timeout(e1));
  CHECK(e2);
  CHECK_FALSE(is_timeout(e2));

  // The others carry on.
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK_FALSE(echo_roundtrip(good1, pattern(i * 800, 10 + i)));
    CHECK_FALSE(echo_roundtrip(good2, pattern(limit, 20 + i)));
  }
  // And new connections are served.
  ionet::framed_client later;
  REQUIRE(connect_client(later, s.port()).ok());
  CHECK_FALSE(echo_roundtrip(later, pattern(limit, 30)));

  const ionet::engine_stats st = s.engine().stats();
  CHECK(st.frames_too_large == 2);
  CHECK(st.connections_open == 3);
  CHECK(s.snapshot().order_errors.empty());
}

TEST_CASE("oversized: a too-large header behind good frames in the same write",
          "[conformance][oversized]") {
  // Two good frames, then a bad header, all in one write: the good ones are
  // delivered (and echoed) before the connection is closed.
  constexpr std::uint32_t limit = 1000;
  ionet::options o = local_options();
  o.max_message_bytes = limit;
  server s(o);
  REQUIRE(s.start().ok());
  ionet::framed_client c, bystander;
  std::string why;
  const auto id = connect_one(s, c, why);
  INFO(why);
  REQUIRE(id);
  REQUIRE(connect_one(s, bystander, why));

  const auto m1 = pattern(limit, 1);
  const auto m2 = pattern(0, 2);
  std::vector<std::byte> stream = frame(m1);
  const auto f2 = frame(m2);
  stream.insert(stream.end(), f2.begin(), f2.end());
  std::byte bad[4];
  put_u32be(bad, limit + 1);
  stream.insert(stream.end(), bad, bad + 4);
  REQUIRE_FALSE(c.write_raw(stream));

  REQUIRE(s.wait_closed_id(*id));
  CHECK(s.snapshot().closed_of(*id)->reason == ionet::errc::message_too_large);
  CHECK(s.snapshot().messages == 2);
  CHECK(s.snapshot().order_errors.empty());
  CHECK_FALSE(echo_roundtrip(bystander, pattern(limit, 3)));
}
