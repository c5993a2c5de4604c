// The test programs themselves: what the sanitizer presets must see in
// them for their findings to mean something.
#include <memory>
#include <thread>

#include "catch.hpp"

// Test code built at -O0 calls the standard library's inline functions
// out of line, and the linker keeps one copy of each for the whole
// program. If the copy it kept came from an object built without
// ThreadSanitizer (Catch2's runner once was), TSan never sees a
// shared_ptr's counts change: a pointee written on one thread and freed on
// another after the count said so reads to it as a race, and a test fails
// now and then, when the last owner happens to be another thread. Here the
// last owner is always the main thread, after the other thread's write and
// release: a TSan build reports a race unless the counts are instrumented.
TEST_CASE("harness: ThreadSanitizer sees the test code's shared_ptr counts",
          "[unit][harness]") {
  for (int i = 0; i < 20; ++i) {
    int seen = -1;  // what the deleter read, on the main thread
    std::shared_ptr<int> p(new int(0), [&seen](int* x) {
      seen = *x;
      delete x;
    });
    std::thread t([q = p]() mutable {
      *q = 1;
      q.reset();  // the release: the write comes before it
    });
    // Only the count orders the write before the deleter's read and free
    // (use_count() is a relaxed load; the last reset() acquires).
    while (p.use_count() != 1) std::this_thread::yield();
    p.reset();
    CHECK(seen == 1);
    t.join();
  }
}
