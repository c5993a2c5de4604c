// ionet-micro: Google Benchmark microbenchmarks of the platform-free code in
// common/ (framing, slab pool, connection table, event queue). Unlike
// ionet-echo + ionet-load they involve no sockets, so they isolate what one
// message costs in our own code from what the kernel and the network cost.
// Each component's benchmarks live in the file named after it; they register
// themselves, so this file only provides main().
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
