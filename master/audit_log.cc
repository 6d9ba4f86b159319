#include "master/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace taskq {
namespace {

// Fields are cut to this many bytes (a status message names a queue or a
// credential; nothing longer belongs in an audit line).
constexpr size_t kMaxFieldBytes = 300;

// One token: no spaces or control characters, bounded, "-" when empty.
std::string Field(absl::string_view value) {
  if (value.empty()) return "-";
  std::string out = absl::CHexEscape(value.substr(0, kMaxFieldBytes));
  std::replace(out.begin(), out.end(), ' ', '_');
  if (value.size() > kMaxFieldBytes) out += "...";
  return out;
}

// The status message is the rest of the line: spaces stay, control
// characters do not.
std::string Result(const absl::Status& s) {
  if (s.ok()) return "OK";
  absl::string_view msg = s.message();
  std::string escaped = absl::CHexEscape(msg.substr(0, kMaxFieldBytes));
  if (msg.size() > kMaxFieldBytes) escaped += "...";
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", escaped);
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path,
                                                         AuditOptions options) {
  if (path == "-") return std::unique_ptr<AuditLog>(new AuditLog(STDERR_FILENO, false, options));
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the audit log ", path, ": ", std::strerror(errno)));
  }
  // It names who did what: as private as the credentials.
  if (::fchmod(fd, 0600) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot make the audit log ", path, " private: ", std::strerror(err)));
  }
  return std::unique_ptr<AuditLog>(new AuditLog(fd, true, options));
}

AuditLog::AuditLog(int fd, bool owns_fd, AuditOptions options)
    : fd_(fd), owns_fd_(owns_fd), options_(options) {
  {
    MutexLock lock(&mu_);
    tokens_ = options_.lines_per_second;
    refilled_ = last_summary_ = Now();
  }
  if (options_.background) {
    ticker_ = std::thread([this] {
      MutexLock lock(&mu_);
      while (!stopping_) {
        wake_.WaitWithTimeout(&mu_, std::min(options_.summary_every, absl::Seconds(1)));
        SummaryLocked(Now(), /*force=*/false);
      }
    });
  }
}

AuditLog::~AuditLog() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (ticker_.joinable()) ticker_.join();
  {
    MutexLock lock(&mu_);
    SummaryLocked(Now(), /*force=*/true);
  }
  if (owns_fd_) ::close(fd_);
}

absl::Time AuditLog::Now() const { return options_.clock ? options_.clock->Now() : absl::Now(); }

void AuditLog::Record(const AuditEntry& e) {
  const absl::Time now = Now();
  MutexLock lock(&mu_);
  tokens_ = std::min(options_.lines_per_second,
                     tokens_ + absl::ToDoubleSeconds(now - refilled_) * options_.lines_per_second);
  refilled_ = now;
  SummaryLocked(now, /*force=*/false);
  if (tokens_ < 1) {
    ++suppressed_;
    ++suppressed_by_action_[Field(e.action)];
    return;
  }
  tokens_ -= 1;
  WriteLine(absl::StrCat(Rfc3339(now), " ", Field(e.action), " credential=", Field(e.credential),
                         " role=", Field(e.role), " peer=", Field(e.peer),
                         " target=", Field(e.target), " result=", Result(e.result), "\n"));
}

void AuditLog::Tick() {
  MutexLock lock(&mu_);
  SummaryLocked(Now(), /*force=*/false);
}

void AuditLog::SummaryLocked(absl::Time now, bool force) {
  if (suppressed_ == 0) {
    last_summary_ = now;
    return;
  }
  if (!force && now - last_summary_ < options_.summary_every) return;
  std::vector<std::string> parts;
  for (const auto& [action, n] : suppressed_by_action_) parts.push_back(absl::StrCat(action, ":", n));
  WriteLine(absl::StrCat(Rfc3339(now), " audit.suppressed count=", suppressed_,
                         " since=", Rfc3339(last_summary_), " actions=", absl::StrJoin(parts, ","),
                         "\n"));
  suppressed_ = 0;
  suppressed_by_action_.clear();
  last_summary_ = now;
}

void AuditLog::WriteLine(const std::string& line) {
  // One write per line: O_APPEND keeps concurrent writers' lines whole.
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      LogWarning("cannot write the audit log: %s", std::strerror(errno));
      return;
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace taskq
