// Option validation: start() refuses a bad option with errc::bad_option (or
// errc::bad_address for the host) and a message that names the option; a
// refused engine leaves nothing running.
#include "support.hpp"

using namespace ionet_test;

namespace {

struct bad_case {
  const char* what;
  void (*mutate)(ionet::options&);
  ionet::errc expected;
  const char* named;  // must appear in status.message
};

const bad_case bad_cases[] = {
    {"slice_bytes 0", [](ionet::options& o) { o.slice_bytes = 0; },
     ionet::errc::bad_option, "slice_bytes"},
    {"max_connections 0", [](ionet::options& o) { o.max_connections = 0; },
     ionet::errc::bad_option, "max_connections"},
    {"threads 0", [](ionet::options& o) { o.threads = 0; },
     ionet::errc::bad_option, "threads"},
    {"max_message_bytes 0", [](ionet::options& o) { o.max_message_bytes = 0; },
     ionet::errc::bad_option, "max_message_bytes"},
    {"max_queued_bytes below max_message_bytes + 4",
     [](ionet::options& o) {
       o.max_message_bytes = 4096;
       o.max_queued_bytes = 4096 + 3;
     },
     ionet::errc::bad_option, "max_queued_bytes"},
    {"max_queued_bytes below max_message_bytes",
     [](ionet::options& o) {
       o.max_message_bytes = 1u << 20;
       o.max_queued_bytes = 1000;
     },
     ionet::errc::bad_option, "max_queued_bytes"},
    {"host not-an-address",
     [](ionet::options& o) { o.host = "not-an-address"; },
     ionet::errc::bad_address, "host"},
    {"host localhost (a name, not a literal)",
     [](ionet::options& o) { o.host = "localhost"; }, ionet::errc::bad_address,
     "host"},
    {"host 256.0.0.1", [](ionet::options& o) { o.host = "256.0.0.1"; },
     ionet::errc::bad_address, "host"},
    {"host empty", [](ionet::options& o) { o.host = ""; },
     ionet::errc::bad_address, "host"},
};

}  // namespace

TEST_CASE("options: bad options are refused and named",
          "[conformance][options]") {
  for (const bad_case& bc : bad_cases) {
    INFO("case: " << bc.what);
    ionet::options o = local_options();
    bc.mutate(o);
    auto eng = ionet::make_engine(o);
    REQUIRE(eng);
    const ionet::status s = eng->start();
    INFO("status: " << s.to_string());
    CHECK_FALSE(s.ok());
    CHECK(s.code == bc.expected);
    CHECK(s.message.find(bc.named) != std::string::npos);
    CHECK(s.to_string().find(bc.named) != std::string::npos);
    // Nothing is left running: poll answers at once, send finds nothing.
    std::vector<ionet::event> batch(4);
    const auto t0 = steady::now();
    CHECK(eng->poll(batch, 3000ms) == 0);
    CHECK(steady::now() - t0 < 1500ms);
    CHECK(eng->send(made_id(0, 1), pattern(4, 1)));
    eng->stop();  // harmless after a refused start
  }
}

TEST_CASE("options: the smallest legal max_queued_bytes is accepted",
          "[conformance][options]") {
  ionet::options o = local_options();
  o.max_message_bytes = 4096;
  o.max_queued_bytes = 4096 + 4;
  server s(o);
  const ionet::status st = s.start();
  INFO(st.to_string());
  REQUIRE(st.ok());
  ionet::framed_client c;
  REQUIRE(connect_client(c, s.port()).ok());
  CHECK_FALSE(echo_roundtrip(c, pattern(4096, 7)));
}
