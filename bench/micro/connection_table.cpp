// connection_table: every accept acquires a slot, every send() and close()
// resolves an id, every closed connection recycles its slot. resolve() is
// the hot one; a stale id must be as cheap to refuse as a live one to find.
#include "common/connection_table.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <optional>

namespace {

using ionet::connection_id;
using ionet::detail::connection_table;

constexpr std::uint32_t capacity = 65536;

// A connection's whole life as the table sees it.
void bm_acquire_resolve_recycle(benchmark::State& state) {
  connection_table table(capacity);
  for (auto _ : state) {
    const std::optional<connection_id> id = table.acquire();
    if (!id) {
      state.SkipWithError("table full");
      return;
    }
    const std::optional<std::uint32_t> slot = table.resolve(*id);
    benchmark::DoNotOptimize(slot);
    table.recycle(*slot);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_acquire_resolve_recycle);

void bm_resolve_live(benchmark::State& state) {
  connection_table table(capacity);
  const connection_id id = *table.acquire();
  for (auto _ : state) {
    // Through DoNotOptimize the id is opaque each time, so the compiler
    // cannot hoist the lookup out of the loop.
    connection_id current = id;
    benchmark::DoNotOptimize(current);
    benchmark::DoNotOptimize(table.resolve(current));
  }
  if (!table.resolve(id)) state.SkipWithError("live id did not resolve");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_resolve_live);

// The case the generation exists for: the slot has been reused by a newer
// connection, and an old id (say, a late send()) must not reach it.
void bm_resolve_stale(benchmark::State& state) {
  connection_table table(capacity);
  const connection_id old_id = *table.acquire();
  table.recycle(ionet::detail::slot_of(old_id));
  const connection_id new_id = *table.acquire();
  if (ionet::detail::slot_of(new_id) != ionet::detail::slot_of(old_id)) {
    state.SkipWithError("slot was not reused");
    return;
  }
  for (auto _ : state) {
    connection_id current = old_id;
    benchmark::DoNotOptimize(current);
    benchmark::DoNotOptimize(table.resolve(current));
  }
  if (table.resolve(old_id)) state.SkipWithError("stale id resolved");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_resolve_stale);

}  // namespace
