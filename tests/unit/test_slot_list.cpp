// slot_list: a loop's set of slots, add and remove in constant time, and a
// sweep that survives the removals its visitor makes.
#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "catch.hpp"
#include "common/slot_list.hpp"

namespace {

struct listed_object {
  ionet::detail::list_place in_a, in_b;
};

using list_a = ionet::detail::slot_list<listed_object, &listed_object::in_a>;
using list_b = ionet::detail::slot_list<listed_object, &listed_object::in_b>;

struct slot_list_fixture {
  ionet::detail::slot_array<listed_object> objects;
  list_a a;
  list_b b;
  explicit slot_list_fixture(std::uint32_t n) {
    objects.reserve(n);
    objects.make(n - 1, [](listed_object&, std::uint32_t) {});
    a.attach(objects);
    b.attach(objects);
  }
};

std::multiset<std::uint32_t> swept(list_a& l) {
  std::multiset<std::uint32_t> seen;
  l.sweep([&](std::uint32_t s) { seen.insert(s); });
  return seen;
}

}  // namespace

TEST_CASE("slot_list: add, remove and contains agree with a plain set",
          "[unit][slot_list]") {
  slot_list_fixture f(64);
  std::set<std::uint32_t> model;
  std::mt19937 rng(7);
  for (int step = 0; step < 5000; ++step) {
    const auto s = static_cast<std::uint32_t>(rng() % 64);
    if (rng() % 2 == 0) {
      if (!f.a.contains(s)) f.a.add(s);
      model.insert(s);
    } else {
      f.a.remove(s);  // also when not listed: nothing happens
      model.erase(s);
    }
    REQUIRE(f.a.size() == model.size());
    for (std::uint32_t k = 0; k < 64; ++k)
      REQUIRE(f.a.contains(k) == (model.count(k) == 1));
  }
  CHECK(swept(f.a) == std::multiset<std::uint32_t>(model.begin(), model.end()));
  // The other list of the same objects is untouched.
  CHECK(f.b.empty());
  for (std::uint32_t k = 0; k < 64; ++k) CHECK_FALSE(f.b.contains(k));
  f.a.clear();
  CHECK(f.a.empty());
  for (std::uint32_t k = 0; k < 64; ++k) CHECK_FALSE(f.a.contains(k));
}

TEST_CASE(
    "slot_list: a sweep whose visitor removes the slot it is given "
    "visits every slot once",
    "[unit][slot_list]") {
  slot_list_fixture f(100);
  for (std::uint32_t s = 0; s < 100; ++s) f.a.add(s);
  std::multiset<std::uint32_t> seen;
  // Removes every third slot it sees: the last then takes its place and
  // must be seen next, not skipped.
  f.a.sweep([&](std::uint32_t s) {
    seen.insert(s);
    if (s % 3 == 0) f.a.remove(s);
  });
  CHECK(seen.size() == 100);
  CHECK(std::set<std::uint32_t>(seen.begin(), seen.end()).size() == 100);
  CHECK(f.a.size() == 100 - 34);
  for (std::uint32_t s = 0; s < 100; ++s)
    CHECK(f.a.contains(s) == (s % 3 != 0));

  // Removing all, the last slot included.
  std::size_t visits = 0;
  f.a.sweep([&](std::uint32_t s) {
    ++visits;
    f.a.remove(s);
  });
  CHECK(visits == 66);
  CHECK(f.a.empty());
}

TEST_CASE("slot_list: slots added during a sweep are visited too",
          "[unit][slot_list]") {
  slot_list_fixture f(20);
  for (std::uint32_t s = 0; s < 10; ++s) f.a.add(s);
  std::multiset<std::uint32_t> seen;
  f.a.sweep([&](std::uint32_t s) {
    seen.insert(s);
    if (s < 10) f.a.add(s + 10);
  });
  CHECK(seen.size() == 20);
  CHECK(std::set<std::uint32_t>(seen.begin(), seen.end()).size() == 20);
}
