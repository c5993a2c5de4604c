// An engine_core on a null engine with one connection open, for unit tests
// that drive the core by hand as a backend would (its owner thread is the
// test's).
#pragma once

#include <optional>

#include "catch.hpp"
#include "common/engine_core.hpp"
#include "tests/null_engine.hpp"

namespace ionet_test {

struct core_with_connection {
  // Two slots: a test may open a second connection, or reuse the first's
  // slot while its closed event is still held.
  static ionet::options two_slots() {
    ionet::options o;
    o.max_connections = 2;
    return o;
  }
  explicit core_with_connection(const ionet::options& o = two_slots())
      : core(self, o) {
    REQUIRE(core.init(1).ok());
    id = core.open_slot(0);
    REQUIRE(id);
    slot = ionet::detail::slot_of(*id);
  }
  null_engine self;
  ionet::detail::engine_core core;
  std::optional<ionet::connection_id> id;
  std::uint32_t slot = 0;
};

}  // namespace ionet_test
