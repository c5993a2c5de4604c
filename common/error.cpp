#include "ionet/error.hpp"

#include <string>

namespace ionet {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ionet"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::stale_connection:
        return "stale_connection";
      case errc::queue_full:
        return "queue_full";
      case errc::message_too_large:
        return "message_too_large";
      case errc::pool_exhausted:
        return "pool_exhausted";
      case errc::closing:
        return "closing";
      case errc::not_running:
        return "not_running";
      case errc::already_running:
        return "already_running";
      case errc::bad_option:
        return "bad_option";
      case errc::address_in_use:
        return "address_in_use";
      case errc::bad_address:
        return "bad_address";
      case errc::out_of_memory:
        return "out_of_memory";
      case errc::unsupported:
        return "unsupported";
      case errc::closed_by_user:
        return "closed_by_user";
      case errc::peer_closed:
        return "peer_closed";
      case errc::connection_reset:
        return "connection_reset";
      case errc::engine_stopped:
        return "engine_stopped";
      case errc::idle_timeout:
        return "idle_timeout";
      case errc::read_timeout:
        return "read_timeout";
      case errc::write_timeout:
        return "write_timeout";
      case errc::connection_refused:
        return "connection_refused";
      case errc::connect_timeout:
        return "connect_timeout";
      case errc::host_unreachable:
        return "host_unreachable";
      case errc::connection_limit:
        return "connection_limit";
    }
    return "unknown ionet error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

std::string status::to_string() const {
  if (!code) return "ok";
  std::string s = code.message();
  if (!message.empty()) s += ": " + message;
  return s;
}

}  // namespace ionet
