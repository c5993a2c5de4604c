#include "backends/uring/ring.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>

namespace ionet::uring {
namespace {

bool disabled_by_env(const char* name) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): ionet never calls setenv.
  const char* list = std::getenv("IONET_URING_DISABLE");
  if (!list) return false;
  const std::size_t n = std::strlen(name);
  for (const char* p = list; (p = std::strstr(p, name)) != nullptr; p += n) {
    const bool starts = p == list || p[-1] == ',';
    const bool ends = p[n] == '\0' || p[n] == ',';
    if (starts && ends) return true;
  }
  return false;
}

// The running kernel's version as major * 1000 + minor (6.1 -> 6001).
int kernel_version() {
  utsname u{};
  if (uname(&u) != 0) return 0;
  int major = 0;
  int minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return 0;
  return major * 1000 + minor;
}

}  // namespace

std::string features::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!s.empty()) s += ' ';
    s += on ? "+" : "-";
    s += name;
  };
  add(multishot_accept, "multishot_accept");
  add(buffer_ring, "buffer_ring");
  add(multishot_recv, "multishot_recv");
  add(cancel_fd, "cancel_fd");
  add(defer_taskrun, "defer_taskrun");
  add(inline_send, "inline_send");
  return s;
}

std::error_code probe_features(features& f, std::string& why) {
  // A throwaway ring tells whether io_uring is usable here at all:
  // io_uring_disabled, a seccomp filter or an old kernel all fail here.
  io_uring probe_ring{};
  if (int r = io_uring_queue_init(4, &probe_ring, 0); r < 0) {
    why = std::string("io_uring cannot be used here (io_uring_setup: ") +
          std::system_category().message(-r) +
          "); kernel.io_uring_disabled, a seccomp filter or a kernel older "
          "than 5.6 does this";
    return {-r, std::system_category()};
  }
  io_uring_probe* p = io_uring_get_probe_ring(&probe_ring);
  const bool ops_ok = p && io_uring_opcode_supported(p, IORING_OP_ACCEPT) &&
                      io_uring_opcode_supported(p, IORING_OP_RECV) &&
                      io_uring_opcode_supported(p, IORING_OP_SENDMSG) &&
                      io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL) &&
                      io_uring_opcode_supported(p, IORING_OP_POLL_ADD) &&
                      io_uring_opcode_supported(p, IORING_OP_READ);
  if (p) io_uring_free_probe(p);
  const unsigned feats = probe_ring.features;
  io_uring_queue_exit(&probe_ring);
  if (!ops_ok) {
    why =
        "this kernel's io_uring lacks accept, recv, sendmsg, cancel or poll (needs 5.6)";
    return std::make_error_code(std::errc::function_not_supported);
  }
  if (!(feats & IORING_FEAT_NODROP) || !(feats & IORING_FEAT_SUBMIT_STABLE) ||
      !(feats & IORING_FEAT_EXT_ARG)) {
    why =
        "this kernel's io_uring lacks NODROP, SUBMIT_STABLE or EXT_ARG (needs 5.11)";
    return std::make_error_code(std::errc::function_not_supported);
  }
  const int v = kernel_version();
  f.multishot_accept = v >= 5019 && !disabled_by_env("multishot_accept");
  f.buffer_ring = v >= 5019 && !disabled_by_env("buffer_ring");
  f.multishot_recv =
      f.buffer_ring && v >= 6000 && !disabled_by_env("multishot_recv");
  f.cancel_fd = v >= 5019 && !disabled_by_env("cancel_fd");
  f.defer_taskrun = v >= 6001 && !disabled_by_env("defer_taskrun");
  f.inline_send = !disabled_by_env("inline_send");
  return {};
}

ring::~ring() {
  if (br_) {
    io_uring_unregister_buf_ring(&ring_, group_);
    munmap(br_, sizeof(io_uring_buf) * buffer_count_);
  }
  if (ready_) io_uring_queue_exit(&ring_);
}

std::error_code ring::init(unsigned entries, const features& f,
                           std::string& why) {
  io_uring_params params{};
  // Completions outnumber submissions (multishot receives): a larger CQ
  // keeps them in the ring rather than on the kernel's overflow list.
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  params.cq_entries = entries * 4;
  if (f.defer_taskrun) {
    // Single issuer: the issuer is the task that enables the ring, which is
    // the loop's thread (enable()), not this one.
    params.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                    IORING_SETUP_R_DISABLED;
    disabled_ = true;
  } else {
    params.flags |= IORING_SETUP_COOP_TASKRUN;
  }
  int r = io_uring_queue_init_params(entries, &ring_, &params);
  if (r == -EINVAL) {
    // An older kernel refusing a flag: the plainest setup.
    io_uring_params plain{};
    disabled_ = false;
    r = io_uring_queue_init_params(entries, &ring_, &plain);
  }
  if (r < 0) {
    why = std::string("io_uring_queue_init: ") +
          std::system_category().message(-r);
    return {-r, std::system_category()};
  }
  ready_ = true;
  return {};
}

void ring::enable() noexcept {
  // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
  if (disabled_) {
    syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS,
            nullptr, 0);
  }
  disabled_ = false;
}

std::error_code ring::init_buffers(std::uint32_t count, std::uint32_t size,
                                   int group) {
  const std::size_t ring_bytes = sizeof(io_uring_buf) * count;
  void* mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return {errno, std::system_category()};
  br_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(br_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(br_);
  reg.ring_entries = count;
  reg.bgid = static_cast<std::uint16_t>(group);
  if (int r = io_uring_register_buf_ring(&ring_, &reg, 0); r < 0) {
    munmap(br_, ring_bytes);
    br_ = nullptr;
    return {-r, std::system_category()};
  }
  buffer_count_ = count;
  buffer_size_ = size;
  group_ = group;
  // The buffers' pages are touched only as receives land in them.
  buffers_.reset(new std::byte[std::size_t{count} * size]);
  for (std::uint32_t i = 0; i < count; ++i) give_buffer(i);
  publish_buffers();
  return {};
}

void ring::give_buffer(std::uint32_t id) noexcept {
  io_uring_buf_ring_add(
      br_, buffer(id), buffer_size_, static_cast<unsigned short>(id),
      io_uring_buf_ring_mask(buffer_count_), pending_buffers_++);
}

void ring::publish_buffers() noexcept {
  if (pending_buffers_ == 0) return;
  io_uring_buf_ring_advance(br_, pending_buffers_);
  pending_buffers_ = 0;
}

io_uring_sqe* ring::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void ring::submit_and_wait(unsigned wait, unsigned timeout_ms) {
  __kernel_timespec ts{};
  ts.tv_sec = timeout_ms / 1000;
  ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
  io_uring_cqe* cqe = nullptr;
  const int r =
      io_uring_submit_and_wait_timeout(&ring_, &cqe, wait, &ts, nullptr);
  // -ETIME (the tick) and -EINTR are expected; anything else means the
  // ring itself is broken, which no caller could recover from.
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
    std::fprintf(stderr, "ionet(uring): io_uring_enter failed: %s\n",
                 std::system_category().message(-r).c_str());
    std::abort();
  }
}

}  // namespace ionet::uring
