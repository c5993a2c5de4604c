// Helpers of the adversarial suite: what every test checks when the dust
// settles. Public API only (the suite runs on every backend).
#pragma once

#include "support.hpp"

namespace ionet_test {

// The counters a hostile client must not be able to unbalance:
// every accepted connection is open or closed; every byte send() took was
// sent or dropped with a reason.
inline void check_balanced(const ionet::engine_stats& st) {
  CHECK(st.accepted == st.closed + st.connections_open);
  CHECK(st.bytes_queued == st.bytes_sent + st.bytes_dropped);
}

// Waits until nothing is in flight (a write that is still going counts
// as queued, not yet sent), then checks the balance.
inline void settle_and_check(server& s) {
  CHECK(eventually([&] {
    const auto st = s.engine().stats();
    return st.bytes_queued == st.bytes_sent + st.bytes_dropped;
  }));
  check_balanced(s.engine().stats());
}

// After stop(): every slice back in the pool, nothing in flight.
inline void check_stopped(server& s) {
  const auto st = s.engine().stats();
  CHECK(st.pool_slices_in_use == 0);
  CHECK(st.connections_open == 0);
  CHECK(st.operations_in_flight == 0);
  check_balanced(st);
}

}  // namespace ionet_test
