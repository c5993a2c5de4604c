// What a loop keeps of its connections: the slots it serves, those whose
// reading is paused, those lingering after a close. A set of slots in no
// order, with add and remove in constant time: each listed object keeps its
// own place in the list (a list_place member), and a removal moves the last
// slot into the gap. Used by one thread, the loop's.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/slot_array.hpp"

namespace ionet::detail {

// An object's position in one slot_list, or none.
struct list_place {
  static constexpr std::uint32_t none = ~std::uint32_t{0};
  std::uint32_t at = none;
};

// The objects are T in a slot_array; Place is the member that holds an
// object's position in this list (one member per list it can be in).
template <class T, list_place T::*Place>
class slot_list {
 public:
  // The array whose objects are listed; before anything else.
  void attach(slot_array<T>& objects) noexcept { objects_ = &objects; }

  bool contains(std::uint32_t slot) const noexcept {
    return place(slot).at != list_place::none;
  }
  // Adds a slot that is not listed.
  void add(std::uint32_t slot) {
    assert(!contains(slot));
    slots_.push_back(slot);  // may throw: the place is not written then
    place(slot).at = static_cast<std::uint32_t>(slots_.size() - 1);
  }
  // Removes a slot if it is listed.
  void remove(std::uint32_t slot) noexcept {
    list_place& p = place(slot);
    if (p.at == list_place::none) return;
    const std::uint32_t last = slots_.back();
    slots_[p.at] = last;
    place(last).at = p.at;
    slots_.pop_back();
    p.at = list_place::none;
  }

  bool empty() const noexcept { return slots_.empty(); }
  std::size_t size() const noexcept { return slots_.size(); }
  void clear() noexcept {
    for (std::uint32_t s : slots_) place(s).at = list_place::none;
    slots_.clear();
  }

  // Calls f(slot) for each slot listed when it is reached. f may remove
  // the slot it is given (the last slot then takes its place and is looked
  // at next) and add slots (looked at too), but remove no other.
  template <class F>
  void sweep(F&& f) {
    for (std::size_t i = 0; i < slots_.size();) {
      const std::uint32_t s = slots_[i];
      f(s);
      if (i < slots_.size() && slots_[i] == s) ++i;
    }
  }

 private:
  list_place& place(std::uint32_t slot) const noexcept {
    return (*objects_)[slot].*Place;
  }

  slot_array<T>* objects_ = nullptr;
  std::vector<std::uint32_t> slots_;
};

// A loop's lists of its connections (T, with list_place members `member`,
// `paused` and `lingering`): the slots it serves; of those, the ones not
// read for now (their peers send more than they read), and the ones that
// wait for their peers' FIN after a graceful close.
template <class T>
struct loop_lists {
  slot_list<T, &T::member> members;
  slot_list<T, &T::paused> paused;
  slot_list<T, &T::lingering> lingering;

  void attach_lists(slot_array<T>& objects) noexcept {
    members.attach(objects);
    paused.attach(objects);
    lingering.attach(objects);
  }
  // Off every list, before the slot may serve another loop.
  void leave_lists(std::uint32_t slot) noexcept {
    paused.remove(slot);
    lingering.remove(slot);
    members.remove(slot);
  }
};

}  // namespace ionet::detail
