// An engine that does nothing, for tests that drive engine_core by hand
// (the unit tests, the fuzz targets): the core reports to an engine, and
// only inline handlers would see it.
#pragma once

#include "ionet/engine.hpp"

namespace ionet_test {

class null_engine final : public ionet::engine {
 public:
  ionet::status start() override { return {}; }
  std::uint16_t port() const noexcept override { return 0; }
  ionet::connect_result connect(const std::string&, std::uint16_t,
                                const ionet::connect_options&) override {
    return {{}, ionet::make_error_code(ionet::errc::unsupported)};
  }
  std::size_t poll(std::span<ionet::event>,
                   std::chrono::milliseconds) override {
    return 0;
  }
  void release(std::span<const ionet::event>) noexcept override {}
  std::error_code send(ionet::connection_id,
                       std::span<const std::byte>) override {
    return {};
  }
  std::error_code close(ionet::connection_id, ionet::close_mode) override {
    return {};
  }
  std::error_code shutdown_send(ionet::connection_id) override { return {}; }
  std::error_code set_context(ionet::connection_id, void*) override {
    return {};
  }
  std::optional<ionet::endpoint> peer_address(
      ionet::connection_id) const override {
    return std::nullopt;
  }
  std::optional<ionet::endpoint> local_address(
      ionet::connection_id) const override {
    return std::nullopt;
  }
  std::optional<std::uint64_t> queued_bytes(
      ionet::connection_id) const override {
    return std::nullopt;
  }
  std::error_code post(ionet::task) override { return {}; }
  std::error_code post(ionet::connection_id, ionet::task) override {
    return {};
  }
  ionet::timer_result after(std::chrono::milliseconds, ionet::task) override {
    return {};
  }
  ionet::timer_result every(std::chrono::milliseconds, ionet::task) override {
    return {};
  }
  bool cancel(ionet::timer_id) noexcept override { return false; }
  ionet::engine_stats stats() const override { return {}; }
  void stop() noexcept override {}
  void shutdown(std::chrono::milliseconds) noexcept override {}
  const char* backend_name() const noexcept override { return "null"; }
};

}  // namespace ionet_test
