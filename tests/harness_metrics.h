// Scraping a --http-listen /metrics in tests (the master's and the
// worker's): the bound port from a --http-port-file, a plain HTTP GET with
// cpp-httplib's client, and one sample's value. Header-only: only the
// tests that link cpp-httplib include it.
//
// Thread-safety: stateless; use from the test's thread.
#pragma once

#include <optional>
#include <string>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {

// The value of the sample `series` (name with its labels exactly as
// written, e.g. `taskq_queue_tasks{queue="q",state="ready"}`).
inline std::optional<double> Value(const std::string& text, const std::string& series) {
  for (const std::string& line : Lines(text)) {
    if (!absl::StartsWith(line, series + " ")) continue;
    double v;
    if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
  }
  return std::nullopt;
}

// The --http-listen port `owner` wrote to `file` (waits for it).
inline int HttpPort(Process* owner, const std::string& file) {
  std::string address;
  EXPECT_TRUE(WaitFor(
      [&] {
        address = ReadFile(file);
        return !address.empty() && address.back() == '\n';
      },
      absl::Seconds(20)))
      << (owner ? owner->Stderr() : "");
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(address.substr(address.rfind(':') + 1)), &port))
      << address;
  return port;
}

struct Reply {
  int status = -1;
  std::string body;
};

// A plain HTTP GET on 127.0.0.1:port, with `headers`.
inline Reply Get(int port, const std::string& path, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  auto res = client.Get(path.c_str(), headers);
  if (!res) return {};
  return {res->status, res->body};
}

}  // namespace taskq::testing
