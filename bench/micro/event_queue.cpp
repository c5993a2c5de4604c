// event_queue: the pull model's hand-off, measured single-threaded so the
// figure is the queue's own cost (lock, copy, index arithmetic), not thread
// wake-ups. Batches of 64 events, the size of a typical poll() array.
//
// Timing push and pop separately needs the other half done off the clock.
// Pausing the timer costs far more than one batch, so each benchmark lets
// the queue run up to `depth` batches and does the other half for all of
// them in one pause; the pause is then a small share of each batch.
#include "common/event_queue.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace {

using ionet::event;
using ionet::detail::event_queue;

constexpr std::size_t batch = 64;
constexpr std::size_t depth = 256;  // batches queued before the other half
constexpr std::chrono::milliseconds no_wait{0};
constexpr std::uint32_t slots = batch + 1;  // connection ids 1..batch

auto no_drop = [](event&) {};  // the queue is never closed here

std::array<event, batch> message_batch() {
  std::array<event, batch> events{};
  for (std::size_t i = 0; i < batch; ++i) {
    events[i].type = ionet::event_type::message;
    events[i].conn = ionet::connection_id{i + 1};
  }
  return events;
}

// The ring grows by doubling and never shrinks: grow it before timing so
// no run measures a reallocation.
void warm(event_queue& q, std::span<const event> in, std::span<event> out) {
  for (std::size_t b = 0; b < depth; ++b) q.push(in, no_drop);
  while (q.pop(out, no_wait) != 0) {
  }
}

void bm_push64(benchmark::State& state) {
  // Message events count against capacity; leave room for `depth` batches
  // so none is held back.
  event_queue q(batch * depth, slots);
  const auto in = message_batch();
  std::array<event, batch> out{};
  warm(q, in, out);
  std::size_t queued = 0;
  for (auto _ : state) {
    q.push(in, no_drop);
    if (++queued == depth) {
      state.PauseTiming();
      while (q.pop(out, no_wait) != 0) {
      }
      queued = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<std::int64_t>(batch));
}
BENCHMARK(bm_push64);

void bm_pop64(benchmark::State& state) {
  event_queue q(batch * depth, slots);
  const auto in = message_batch();
  std::array<event, batch> out{};
  warm(q, in, out);
  std::size_t queued = 0;
  for (auto _ : state) {
    if (queued == 0) {
      state.PauseTiming();
      for (std::size_t b = 0; b < depth; ++b) q.push(in, no_drop);
      queued = depth;
      state.ResumeTiming();
    }
    if (q.pop(out, no_wait) != batch) {
      state.SkipWithError("short pop");
      return;
    }
    benchmark::DoNotOptimize(out.data());
    --queued;
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<std::int64_t>(batch));
}
BENCHMARK(bm_pop64);

// Both halves back to back with the queue near empty, as when the user's
// thread keeps up: the round trip one batch of events costs.
void bm_push_pop64(benchmark::State& state) {
  event_queue q(batch * depth, slots);
  const auto in = message_batch();
  std::array<event, batch> out{};
  warm(q, in, out);
  for (auto _ : state) {
    q.push(in, no_drop);
    if (q.pop(out, no_wait) != batch) {
      state.SkipWithError("short pop");
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<std::int64_t>(batch));
}
BENCHMARK(bm_push_pop64);

}  // namespace
