// slot_array: objects made in slot order as slots come into use, each once,
// and destroyed with the array.
#include <atomic>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "common/slot_array.hpp"

namespace {

std::atomic<int> slot_objects_live{0};

struct slot_object {
  slot_object() { slot_objects_live.fetch_add(1); }
  ~slot_object() { slot_objects_live.fetch_sub(1); }
  std::uint32_t slot = 0xffffffffu;
  int inits = 0;
};

}  // namespace

TEST_CASE("slot_array: make() builds every slot up to the one asked for, once",
          "[unit][slot_array]") {
  slot_objects_live = 0;
  {
    ionet::detail::slot_array<slot_object> a;
    a.reserve(100);
    CHECK(a.made() == 0);
    CHECK(slot_objects_live == 0);  // reserved, nothing made
    auto init = [](slot_object& c, std::uint32_t slot) {
      c.slot = slot;
      ++c.inits;
    };
    slot_object& c3 = a.make(3, init);
    CHECK(c3.slot == 3);
    CHECK(a.made() == 4);
    CHECK(slot_objects_live == 4);
    for (std::uint32_t i = 0; i < 4; ++i) {
      CHECK(a[i].slot == i);
      CHECK(a[i].inits == 1);
    }
    CHECK(&a.make(2, init) == &a[2]);  // already made: left alone
    CHECK(a[2].inits == 1);
    CHECK(a.made() == 4);
  }
  CHECK(slot_objects_live == 0);  // every made object destroyed
}

TEST_CASE("slot_array: threads making slots at once make each one once",
          "[unit][slot_array]") {
  slot_objects_live = 0;
  ionet::detail::slot_array<slot_object> a;
  a.reserve(4000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&a, t] {
      for (std::uint32_t i = static_cast<std::uint32_t>(t); i < 4000; i += 4)
        a.make(i, [](slot_object& c, std::uint32_t slot) {
          c.slot = slot;
          ++c.inits;
        });
    });
  }
  for (auto& th : threads) th.join();
  CHECK(a.made() == 4000);
  CHECK(slot_objects_live == 4000);
  bool all_once = true;
  for (std::uint32_t i = 0; i < 4000; ++i)
    all_once = all_once && a[i].slot == i && a[i].inits == 1;
  CHECK(all_once);
  a.reset();
  CHECK(slot_objects_live == 0);
}
