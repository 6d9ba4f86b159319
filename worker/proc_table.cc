#include "worker/proc_table.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace taskq {
namespace {

// Opens a pidfd for p.pid if it still names the process `p` (same start
// time); -1 otherwise.
int OpenSamePidfd(const ProcStat& p) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, p.pid, 0u));
  if (fd < 0) return -1;
  // Checked after the pidfd is open: from now on the pid cannot be reused
  // for another process while we hold it... but it may have been before.
  std::optional<ProcStat> now = ReadProcStat(p.pid);
  if (!now || now->start_ticks != p.start_ticks) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  absl::string_view text(buf, static_cast<size_t>(n));
  // "PID (COMM) STATE PPID PGRP SESSION ..." where COMM may hold anything,
  // ')' included: the fields start after the last ')'.
  size_t close = text.rfind(')');
  if (close == absl::string_view::npos) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(text.substr(close + 1), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); starttime is field 22.
  if (fields.size() < 20 || fields[0].empty()) return std::nullopt;
  ProcStat stat;
  stat.pid = pid;
  stat.state = fields[0][0];
  if (!absl::SimpleAtoi(fields[1], &stat.ppid) || !absl::SimpleAtoi(fields[2], &stat.pgid) ||
      !absl::SimpleAtoi(fields[3], &stat.sid) || !absl::SimpleAtoi(fields[19], &stat.start_ticks)) {
    return std::nullopt;
  }
  return stat;
}

std::vector<ProcStat> ListProcesses() {
  std::vector<ProcStat> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* entry = ::readdir(dir)) {
    int pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    if (std::optional<ProcStat> stat = ReadProcStat(pid)) out.push_back(*stat);
  }
  ::closedir(dir);
  return out;
}

namespace {

// Appends the children of every thread of `pid` to `out`; false if the
// kernel has no children files.
bool AppendChildren(pid_t pid, std::vector<pid_t>* out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task", static_cast<int>(pid));
  DIR* dir = ::opendir(path);
  if (dir == nullptr) return true;  // gone
  bool supported = true;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string file = absl::StrCat(path, "/", entry->d_name, "/children");
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) supported = false;
      continue;
    }
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    ::close(fd);
    for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
      int child;
      if (absl::SimpleAtoi(word, &child)) out->push_back(child);
    }
  }
  ::closedir(dir);
  return supported;
}

}  // namespace

std::vector<ProcStat> ListDescendants(pid_t root, const std::function<bool(pid_t)>& skip,
                                      int depth) {
  std::vector<ProcStat> out;
  std::vector<pid_t> children;
  if (!AppendChildren(root, &children)) return ListProcesses();
  std::vector<std::pair<pid_t, int>> frontier;  // pid, its depth
  for (pid_t pid : children) frontier.emplace_back(pid, 1);
  // Bounded: a fork bomb must not keep us here.
  constexpr size_t kMaxProcesses = 1 << 16;
  while (!frontier.empty() && out.size() < kMaxProcesses) {
    auto [pid, level] = frontier.back();
    frontier.pop_back();
    if (skip && skip(pid)) continue;
    std::optional<ProcStat> stat = ReadProcStat(pid);
    if (!stat) continue;
    out.push_back(*stat);
    if (stat->state == 'Z' || level >= depth) continue;
    children.clear();
    AppendChildren(pid, &children);
    for (pid_t child : children) frontier.emplace_back(child, level + 1);
  }
  return out;
}

uint64_t BootTicksNow() {
  timespec ts;
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  static const uint64_t hz = static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  return static_cast<uint64_t>(ts.tv_sec) * hz +
         static_cast<uint64_t>(ts.tv_nsec) * hz / 1'000'000'000u;
}

bool SignalIfSame(const ProcStat& p, int signal) {
  int fd = OpenSamePidfd(p);
  if (fd < 0) return false;
  bool sent = syscall(SYS_pidfd_send_signal, fd, signal, nullptr, 0u) == 0;
  ::close(fd);
  return sent;
}

bool ReapIfSame(const ProcStat& p) {
  int fd = OpenSamePidfd(p);
  if (fd < 0) return false;
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  int rc;
  do {
    rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info, WEXITED | WNOHANG);
  } while (rc < 0 && errno == EINTR);
  ::close(fd);
  return rc == 0 && info.si_pid != 0;
}

}  // namespace taskq
