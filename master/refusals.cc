#include "master/refusals.h"

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace taskq {

absl::string_view RefusalName(Refusal kind) {
  switch (kind) {
    case Refusal::kNoToken: return "calls without a token";
    case Refusal::kWrongToken: return "calls with a wrong token";
    case Refusal::kMalformed: return "malformed requests";
    case Refusal::kConnectionCap: return "connections over --max-connections";
    case Refusal::kUnauthenticatedCap: return "connections over the unauthenticated-connection caps";
    case Refusal::kIdleUnauthenticated: return "connections closed for not authenticating in time";
    case Refusal::kAcceptError: return "failed accepts";
    case Refusal::kPermissionDenied: return "calls refused by a credential's role or queues";
  }
  return "refusals";
}

void RefusalLog::Refuse(Refusal kind, absl::string_view peer, absl::string_view detail) {
  PerKind& k = kinds_[static_cast<size_t>(kind)];
  const uint64_t total = k.total.fetch_add(1, std::memory_order_relaxed) + 1;
  k.unlogged.fetch_add(1, std::memory_order_relaxed);
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t last = k.last_line_ns.load(std::memory_order_relaxed);
  if (last != 0 && now - last < absl::ToInt64Nanoseconds(interval_)) return;
  // One thread writes the line; the others' refusals go into the next one.
  if (!k.last_line_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  const uint64_t n = k.unlogged.exchange(0, std::memory_order_relaxed);
  MutexLock lock(&mu_);
  if (n <= 1) {
    LogEvent(LogLevel::kWarning, absl::StrCat("refused: ", RefusalName(kind), " (", detail, ")"),
             {{"peer", peer}, {"since_start", total}});
  } else {
    LogEvent(LogLevel::kWarning,
             absl::StrCat("refused ", n, " ", RefusalName(kind), " in the last ",
                          (now - last) / 1'000'000'000, " s (last: ", detail, ")"),
             {{"peer", peer}, {"refused", n}, {"since_start", total}});
  }
}

uint64_t RefusalLog::Count(Refusal kind) const {
  return kinds_[static_cast<size_t>(kind)].total.load(std::memory_order_relaxed);
}

namespace {

void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  static std::atomic<int64_t> last_ns{0};
  static std::atomic<uint64_t> dropped{0};
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t last = last_ns.load(std::memory_order_relaxed);
  if (last != 0 && now - last < absl::ToInt64Nanoseconds(absl::Seconds(10))) {
    dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!last_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  const uint64_t n = dropped.exchange(0, std::memory_order_relaxed);
  const char* what = level >= google::protobuf::LOGLEVEL_ERROR ? "error" : "warning";
  LogWarning("libprotobuf %s (%s:%d): %s%s", what, file, line, message,
             n > 0 ? absl::StrCat(" (", n, " more not shown)") : "");
}

}  // namespace

void RouteProtobufLogs() { google::protobuf::SetLogHandler(&ProtobufLog); }

RefusalLog& Refusals() {
  static RefusalLog* log = new RefusalLog();
  return *log;
}

}  // namespace taskq
