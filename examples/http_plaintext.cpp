// ionet-example-http_plaintext: a keep-alive HTTP/1.1 server that answers
// every request with "Hello, World!" (the TechEmpower plaintext test).
//
// Raw framing: the engine hands over the bytes of each read as they came,
// so this program finds the requests in them itself. A read may hold
// several requests (a pipelining client) and a request may end in a later
// read, so each connection keeps the start of an unfinished request in its
// context: made on `connected`, given back (and freed) on `closed`.
//
// The inline handler: events are handled on the engine's threads, as they
// come, with no hand-off to a thread of ours. One connection's events come
// one at a time, in order, but not always on the same thread (IOCP: any
// worker), so per-connection state lives in the context; what is kept per
// thread (the Date header, the reply buffer) is for one call at a time.
//
// Kept simple on purpose: any method and target get the same answer; a
// request with a body (Content-Length above 0, Transfer-Encoding), a
// header block over kMaxHeaderBytes or a malformed request line closes the
// connection without an answer.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "common/cli.hpp"
#include "ionet/ionet.hpp"

namespace {

constexpr const char* kName = "ionet-example-http_plaintext";
constexpr std::size_t kMaxHeaderBytes = 8 << 10;
// The replies to one read go out in one send(). A read of many tiny
// pipelined requests is answered in sends of about this size instead, far
// below options::max_queued_bytes (a send above it would be refused).
constexpr std::size_t kMaxBatchBytes = 64 << 10;

// A connection's context: the part of its input not answered yet.
struct http_conn {
  std::string pending;       // the start of a request whose headers go on
  std::size_t searched = 0;  // of `pending`, bytes without a header end
  bool closing = false;      // close() called: ignore what else arrives
};

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Header names and these values are case-insensitive.
bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

struct request {
  bool ok = false;          // false: malformed, or has a body: close
  bool http10 = false;      // HTTP/1.0: keeps alive only when asked to
  bool keep_alive = false;  // answer and read on, or answer and close
};

// Checks one header block (request line and headers, without the blank
// line that ends it).
request check_request(std::string_view head) {
  request r;
  std::size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  // "METHOD TARGET HTTP/1.x": two spaces, none empty.
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp1 == std::string_view::npos ||
      sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
      line.find(' ', sp2 + 1) != std::string_view::npos) {
    return r;
  }
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return r;
  r.http10 = version == "HTTP/1.0";
  r.keep_alive = !r.http10;
  while (eol != std::string_view::npos) {
    const std::size_t start = eol + 2;
    eol = head.find("\r\n", start);
    const std::string_view field = head.substr(start, eol - start);
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return r;
    const std::string_view name = field.substr(0, colon);
    const std::string_view value = trim(field.substr(colon + 1));
    if (iequals(name, "content-length") && value != "0") return r;
    if (iequals(name, "transfer-encoding")) return r;
    if (iequals(name, "connection")) {
      if (iequals(value, "close")) r.keep_alive = false;
      if (iequals(value, "keep-alive")) r.keep_alive = true;
    }
  }
  r.ok = true;
  return r;
}

// The Date header's value, "Sun, 06 Nov 1994 08:49:37 GMT", formatted again
// only when the second changes. Each engine thread keeps its own, so
// handlers share nothing and take no lock.
std::string_view http_date() {
  using namespace std::chrono;
  thread_local sys_seconds shown{};
  thread_local std::array<char, 32> text{};
  const sys_seconds now = floor<seconds>(system_clock::now());
  if (now != shown) {
    static constexpr std::array<const char*, 7> kDays = {
        "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr std::array<const char*, 12> kMonths = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun",
        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const sys_days today = floor<days>(now);
    const year_month_day ymd(today);
    const hh_mm_ss<seconds> hms(now - today);
    std::snprintf(
        text.data(), text.size(), "%s, %02u %s %04d %02d:%02d:%02d GMT",
        kDays[weekday(today).c_encoding()], static_cast<unsigned>(ymd.day()),
        kMonths[static_cast<unsigned>(ymd.month()) - 1],
        static_cast<int>(ymd.year()), static_cast<int>(hms.hours().count()),
        static_cast<int>(hms.minutes().count()),
        static_cast<int>(hms.seconds().count()));
    shown = now;
  }
  return text.data();
}

void append_reply(std::string& out, const request& r) {
  out += "HTTP/1.1 200 OK\r\nServer: ionet\r\nDate: ";
  out += http_date();
  out += "\r\n";
  if (!r.keep_alive) {
    out += "Connection: close\r\n";
  } else if (r.http10) {
    out += "Connection: keep-alive\r\n";  // 1.0 closes unless told
  }
  out += "Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
}

// Sends `out`. False when the connection cannot take it: it is then reset.
bool send_replies(ionet::engine& engine, ionet::connection_id conn,
                  http_conn& c, const std::string& out) {
  const std::error_code ec =
      engine.send(conn, std::as_bytes(std::span(out.data(), out.size())));
  if (!ec) return true;
  // queue_full or pool_exhausted: the client sends requests faster than
  // it reads the replies. A handler must not wait, so it is reset (a
  // graceful close would go on sending to a client that does not read).
  // stale_connection or closing: it is going anyway.
  c.closing = true;
  (void)engine.close(conn, ionet::close_mode::reset);  // error: going already
  return false;
}

void on_message(ionet::engine& engine, const ionet::event& e) {
  auto* c = static_cast<http_conn*>(e.context());
  if (c == nullptr || c->closing) return;
  const std::string_view data(reinterpret_cast<const char*>(e.data.data()),
                              e.data.size());
  // Most reads hold whole requests: parse them where they lie, and copy
  // only a request left unfinished (or a read that finishes one).
  const bool resumed = !c->pending.empty();
  if (resumed) c->pending.append(data);
  const std::string_view in = resumed ? std::string_view(c->pending) : data;

  // Only one call runs on a thread at a time, so the buffer can be reused
  // from call to call: no allocation once it has grown.
  thread_local std::string out;
  out.clear();
  std::size_t done = 0;  // bytes of `in` answered
  std::size_t search_from = resumed ? c->searched : 0;
  bool close_after = false;  // "Connection: close", or a request refused
  while (!close_after) {
    const std::size_t end = in.find("\r\n\r\n", done + search_from);
    search_from = 0;
    if (end == std::string_view::npos) {
      // Unfinished: wait for the rest, unless it is too long already.
      close_after = in.size() - done > kMaxHeaderBytes;
      break;
    }
    const std::size_t size = end + 4 - done;
    const request r = size <= kMaxHeaderBytes
                          ? check_request(in.substr(done, size - 4))
                          : request{};
    if (!r.ok) {
      close_after = true;  // unanswered; the requests before it are not
      break;
    }
    append_reply(out, r);
    done += size;
    close_after = !r.keep_alive;
    if (out.size() >= kMaxBatchBytes) {
      if (!send_replies(engine, e.conn, *c, out)) return;
      out.clear();
    }
  }
  if (!out.empty() && !send_replies(engine, e.conn, *c, out)) return;
  if (close_after) {
    // Graceful: the replies sent are written first.
    c->closing = true;
    (void)engine.close(e.conn);  // an error: closing or gone already
    return;
  }

  // Keep what is unfinished; `in` may point into `pending`, so last.
  if (resumed) {
    c->pending.erase(0, done);
  } else {
    c->pending.assign(data.substr(done));
  }
  // Next time, search again only from where a "\r\n\r\n" may begin.
  const std::size_t left = c->pending.size();
  c->searched = left > 3 ? left - 3 : 0;
}

void on_event(ionet::engine& engine, const ionet::event& e) {
  switch (e.type) {
    case ionet::event_type::connected: {
      auto* c = new http_conn;
      // It fails only when the connection is gone already: then its closed
      // event will carry no context, so the state is freed here.
      if (engine.set_context(e.conn, c)) delete c;
      break;
    }
    case ionet::event_type::message:
      on_message(engine, e);
      break;
    case ionet::event_type::closed:
      // The context comes back for the last time.
      delete static_cast<http_conn*>(e.context());
      break;
    case ionet::event_type::writable:
      break;  // a refused send closes the connection: nothing to resume
    case ionet::event_type::task:
      e.run();  // it posts nothing; run() is all a task event asks
      break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  example::server_flags flags;
  if (auto done = example::parse_flags(
          argc, argv, kName,
          "Answers every HTTP/1.1 request with 'Hello, World!' (keep-alive, "
          "pipelining).",
          flags)) {
    return *done;
  }

  ionet::options opts;
  example::apply(flags, opts);
  opts.mode = ionet::framing::raw;
  opts.handler = on_event;

  auto engine = ionet::make_engine(opts);
  example::stop_on_signals();
  if (ionet::status st = engine->start(); !st) {
    return example::start_failed(kName, st);
  }
  example::print_listening(opts.host, engine->port());
  example::wait_for_stop_signal();
  // Closes every connection; each closed event frees its context.
  engine->stop();
  return 0;
}
