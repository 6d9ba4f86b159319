#include "tests/cluster/cpu_quota.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

constexpr char kV2Root[] = "/sys/fs/cgroup";
constexpr char kV1Root[] = "/sys/fs/cgroup/cpu";
constexpr int kPeriodUs = 100000;

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Whether a cgroup v2 controller list ("cpuset cpu io ...") names `name`.
bool Lists(const std::string& file, absl::string_view name) {
  for (absl::string_view c : absl::StrSplit(ReadFile(file), absl::ByAnyChar(" \n"),
                                            absl::SkipWhitespace())) {
    if (c == name) return true;
  }
  return false;
}

bool IsV2() { return Lists(absl::StrCat(kV2Root, "/cgroup.controllers"), "cpu"); }
bool IsV1() { return Exists(absl::StrCat(kV1Root, "/cpu.cfs_quota_us")); }

std::string Root() { return IsV2() ? kV2Root : kV1Root; }

// Writes `text` to a cgroup control file; the errno text on failure.
absl::Status Put(const std::string& file, const std::string& text) {
  FILE* f = std::fopen(file.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat(file, ": ", std::strerror(errno)));
  const bool written = std::fputs(text.c_str(), f) >= 0;
  const int close_error = std::fclose(f) == 0 ? 0 : errno;
  if (!written || close_error != 0) {
    return absl::InternalError(absl::StrCat("writing '", text, "' to ", file, ": ",
                                            std::strerror(close_error ? close_error : EIO)));
  }
  return absl::OkStatus();
}

std::vector<pid_t> Members(const std::string& path) {
  std::vector<pid_t> pids;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(path + "/cgroup.procs"), '\n', absl::SkipEmpty())) {
    int pid;
    if (absl::SimpleAtoi(line, &pid)) pids.push_back(pid);
  }
  return pids;
}

// Kills what is inside, waits until it is empty, removes it.
void Remove(const std::string& path) {
  if (!Exists(path)) return;
  WaitFor(
      [&] {
        std::vector<pid_t> pids = Members(path);
        for (pid_t pid : pids) ::kill(pid, SIGKILL);
        return pids.empty();
      },
      absl::Seconds(10), absl::Milliseconds(5));
  // A dying process may keep it busy a moment after leaving cgroup.procs.
  WaitFor([&] { return ::rmdir(path.c_str()) == 0 || errno == ENOENT; }, absl::Seconds(10),
          absl::Milliseconds(5));
  if (Exists(path)) std::cerr << "[cpu-quota] could not remove " << path << "\n";
}

std::atomic<int> g_groups{0};

}  // namespace

std::string CpuQuota::Kind() {
  if (IsV2()) return "cgroup v2";
  if (IsV1()) return "cgroup v1";
  return "";
}

std::string CpuQuota::WhyUnavailable() {
  static const std::string why = []() -> std::string {
    if (::geteuid() != 0) return "needs root to make a CPU cgroup";
    if (Kind().empty()) {
      return "no cgroup cpu controller: neither /sys/fs/cgroup/cgroup.controllers listing "
             "cpu (cgroup v2) nor /sys/fs/cgroup/cpu/cpu.cfs_quota_us (cgroup v1)";
    }
    auto probe = Create("probe", 0.5);
    if (!probe.ok()) return absl::StrCat("cannot make a CPU cgroup: ", probe.status().message());
    return "";
  }();
  return why;
}

void CpuQuota::SweepLeftovers() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(Root(), ec)) {
    if (!entry.is_directory(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (name.compare(0, 2, "tq") != 0) continue;
    const size_t dash = name.find("-cpu-");
    int pid;
    if (dash == std::string::npos || !absl::SimpleAtoi(name.substr(2, dash - 2), &pid)) continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      std::cerr << "[cpu-quota] sweeping " << entry.path() << ", left by a run that died\n";
      Remove(entry.path().string());
    }
  }
}

absl::StatusOr<std::unique_ptr<CpuQuota>> CpuQuota::Create(const std::string& label,
                                                           double cores) {
  if (Kind().empty()) return absl::UnavailableError("no cgroup cpu controller");
  if (!(cores > 0) || cores > 64) {
    return absl::InvalidArgumentError("a CPU quota is between 0 and 64 cores");
  }
  SweepLeftovers();
  const bool v2 = IsV2();
  const std::string root = Root();
  if (v2) {
    // The cpu controller must be on for the root's children.
    const std::string control = absl::StrCat(root, "/cgroup.subtree_control");
    if (!Lists(control, "cpu")) {
      if (auto s = Put(control, "+cpu"); !s.ok()) return s;
    }
  }
  std::unique_ptr<CpuQuota> q(new CpuQuota());
  q->cores_ = cores;
  const std::string path =
      absl::StrCat(root, "/tq", ::getpid(), "-cpu-", ++g_groups, "-", label);
  if (::mkdir(path.c_str(), 0755) != 0) {
    return absl::InternalError(absl::StrCat("mkdir ", path, ": ", std::strerror(errno)));
  }
  q->path_ = path;  // from here the destructor removes it
  q->procs_ = path + "/cgroup.procs";
  const long quota = std::lround(cores * kPeriodUs);
  if (v2) {
    if (auto s = Put(path + "/cpu.max", absl::StrCat(quota, " ", kPeriodUs)); !s.ok()) return s;
  } else {
    if (auto s = Put(path + "/cpu.cfs_period_us", absl::StrCat(kPeriodUs)); !s.ok()) return s;
    if (auto s = Put(path + "/cpu.cfs_quota_us", absl::StrCat(quota)); !s.ok()) return s;
  }
  return q;
}

CpuQuota::~CpuQuota() {
  if (!path_.empty()) Remove(path_);
}

std::vector<std::string> CpuQuota::Wrap(std::vector<std::string> argv) const {
  std::vector<std::string> out = {"/bin/sh", "-c",
                                  absl::StrCat("echo $$ > '", procs_, "' && exec \"$@\""), "sh"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

long CpuQuota::Throttled() const {
  for (absl::string_view line : absl::StrSplit(ReadFile(path_ + "/cpu.stat"), '\n')) {
    long n;
    if (absl::ConsumePrefix(&line, "nr_throttled ") && absl::SimpleAtoi(line, &n)) return n;
  }
  return -1;
}

}  // namespace taskq::testing
