// slab_pool: the lock-free free stack every send() goes through. Single
// thread first (the cost of the CAS loop alone), then two threads taking and
// giving on one pool, which is what concurrent send()s from user threads and
// completions on an engine thread do to it.
#include "common/slab_pool.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>

namespace {

using ionet::detail::no_slice;
using ionet::detail::slab_pool;
using ionet::detail::slice_chain;

constexpr std::uint32_t slice_bytes = 512;
constexpr std::uint32_t slices = 4096;

// One pool shared by every thread of a run. A function-local static is
// built once, race-free, by whichever thread gets here first; every thread
// gives back all it takes, so the pool is full again between runs.
slab_pool& shared_pool() {
  static slab_pool pool(slice_bytes, slices);
  return pool;
}

void bm_take_give(benchmark::State& state) {
  slab_pool& pool = shared_pool();
  for (auto _ : state) {
    const std::uint32_t s = pool.take();
    if (s == no_slice) {
      state.SkipWithError("pool exhausted");
      return;
    }
    benchmark::DoNotOptimize(s);
    pool.give(s);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_take_give);
// Real time: with threads, items/s is then the pool's total throughput.
BENCHMARK(bm_take_give)->Threads(2)->UseRealTime();

void bm_take_give_chain8(benchmark::State& state) {
  slab_pool& pool = shared_pool();
  for (auto _ : state) {
    slice_chain chain;
    if (!pool.take_chain(8, chain)) {
      state.SkipWithError("pool exhausted");
      return;
    }
    benchmark::DoNotOptimize(chain.head);
    pool.give_chain(chain);
  }
  // Items are slices, so the figure compares directly with bm_take_give.
  state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(bm_take_give_chain8);
BENCHMARK(bm_take_give_chain8)->Threads(2)->UseRealTime();

}  // namespace
