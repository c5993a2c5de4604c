// One io_uring and what it can do: set up with the best flags the kernel
// takes, its features probed once, a provided-buffer ring for receives, and
// SQE acquisition that submits when the queue is full rather than fail.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

namespace ionet::uring {

// What the kernel offers, decided at start. A missing feature selects a
// plainer path; IONET_URING_DISABLE (a comma list of the names below)
// turns features off by hand so the plainer paths are tested too.
struct features {
  bool multishot_accept = false;  // "multishot_accept": Linux 5.19
  bool buffer_ring = false;       // "buffer_ring": provided buffer rings, 5.19
  bool multishot_recv = false;    // "multishot_recv": 6.0, needs buffer_ring
  bool cancel_fd = false;      // "cancel_fd": cancel by fd, all at once, 5.19
  bool defer_taskrun = false;  // "defer_taskrun": 6.1
  // "inline_send": a plain sendmsg first while the socket has room (any
  // kernel); off, every send is an io_uring operation.
  bool inline_send = false;
  std::string describe() const;
};

// Probes the kernel (version, io_uring_get_probe). Fails with a sentence
// when io_uring cannot be used at all (disabled, seccomp, too old).
std::error_code probe_features(features& out, std::string& why);

// An op's completion: the CQE's user_data points to one of these, which
// says whose it is and where to send it.
struct op;
class engine_impl;
struct loop;
using complete_fn = void (*)(loop& l, op& o, const io_uring_cqe& cqe);

struct op {
  complete_fn complete = nullptr;
  std::uint32_t owner = 0;       // connection slot, or unused
  std::uint32_t generation = 0;  // the connection's when issued
};

class ring {
 public:
  ring() = default;
  ~ring();
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;

  // entries: SQ size. With `f.defer_taskrun` the ring is single-issuer and
  // runs completion work only when this thread waits, which saves wakeups.
  std::error_code init(unsigned entries, const features& f, std::string& why);
  // Called once on the thread that will submit, before any SQE.
  void enable() noexcept;
  // A receive buffer ring of `count` buffers of `size` bytes (count a power
  // of two), group `group`.
  std::error_code init_buffers(std::uint32_t count, std::uint32_t size,
                               int group);

  // Never null: when the SQ is full it is submitted first.
  io_uring_sqe* sqe();
  void submit_and_wait(unsigned wait, unsigned timeout_ms);

  // Receive buffers.
  std::byte* buffer(std::uint32_t id) noexcept {
    return buffers_.get() + std::size_t{id} * buffer_size_;
  }
  std::uint32_t buffer_size() const noexcept { return buffer_size_; }
  void give_buffer(std::uint32_t id) noexcept;
  void publish_buffers() noexcept;  // makes given-back buffers visible
  int buffer_group() const noexcept { return group_; }

  io_uring* get() noexcept { return &ring_; }

 private:
  io_uring ring_{};
  bool ready_ = false;
  bool disabled_ = false;
  io_uring_buf_ring* br_ = nullptr;
  std::unique_ptr<std::byte[]> buffers_;
  std::uint32_t buffer_count_ = 0;
  std::uint32_t buffer_size_ = 0;
  int group_ = -1;
  int pending_buffers_ = 0;
};

}  // namespace ionet::uring
