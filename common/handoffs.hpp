// Connections with something new to send (or to close), handed to the loop
// that owns them: engine_base calls a backend's hand_off(), which puts the
// id here. On the loop's own thread that is a push onto a plain list,
// served before the loop sleeps: no lock, no wake-up. From any other thread
// it goes into a locked inbox, and only the first id since the loop last
// looked needs the loop woken: one wake-up serves all that came before the
// loop took them.
#pragma once

#include <mutex>
#include <vector>

#include "ionet/events.hpp"

namespace ionet::detail {

class handoffs {
 public:
  // The loop's thread.
  void push_local(connection_id id) { local_.push_back(id); }
  // Any other thread. True when the caller must wake the loop.
  [[nodiscard]] bool push_remote(connection_id id) {
    std::lock_guard g(lock_);
    const bool first = remote_.empty();
    remote_.push_back(id);
    return first;
  }

  // The loop, when woken: what other threads handed over joins the local
  // list.
  void take_remote() {
    std::lock_guard g(lock_);
    if (local_.empty()) {
      local_.swap(remote_);
    } else {
      local_.insert(local_.end(), remote_.begin(), remote_.end());
      remote_.clear();
    }
  }
  // The loop: serve(id) for each id on the local list, then after(), and
  // again while either handed over more (an inline handler's sends).
  template <class Serve, class After>
  void serve_local(Serve&& serve, After&& after) {
    while (!local_.empty()) {
      work_.swap(local_);
      for (connection_id id : work_) serve(id);
      work_.clear();
      after();
    }
  }
  // At stop: what was handed over and not served is dropped (the
  // connections are being closed).
  void clear() {
    std::lock_guard g(lock_);
    remote_.clear();
    local_.clear();
  }

 private:
  std::mutex lock_;
  std::vector<connection_id> remote_;  // under lock_
  std::vector<connection_id> local_;   // the loop's thread only
  std::vector<connection_id> work_;    // local_, being served
};

}  // namespace ionet::detail
