#include "worker/exec_containment.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/runtime/sleep.h"
#include "worker/exec_spawn.h"
#include "worker/proc_table.h"

namespace taskq {
namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(10);
// Rounds of the orphan sweep after a task (each kills what the previous
// round's deaths orphaned).
constexpr int kSweepRounds = 50;
constexpr char kWorkerDirPrefix[] = "taskq-exec-";

// The exec tasks running in this process, whatever their containment: the
// subreaper and the zombies it adopts are process-wide, so the sweep must
// know every task. Entries are added before the child is spawned (leader
// 0 until it is), so a child is known before it can be seen.
class RunningTasks {
 public:
  struct Entry {
    uint64_t start_ticks = 0;
    pid_t leader = 0;
  };
  static RunningTasks& Get() {
    static RunningTasks* instance = new RunningTasks;
    return *instance;
  }
  uint64_t Add() {
    MutexLock lock(&mu_);
    uint64_t id = ++next_;
    entries_[id] = Entry{BootTicksNow(), 0};
    return id;
  }
  void SetLeader(uint64_t id, pid_t pid) {
    MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) it->second.leader = pid;
  }
  void Remove(uint64_t id) {
    MutexLock lock(&mu_);
    entries_.erase(id);
  }
  std::vector<Entry> Snapshot() {
    MutexLock lock(&mu_);
    std::vector<Entry> out;
    out.reserve(entries_.size());
    for (const auto& [id, entry] : entries_) out.push_back(entry);
    return out;
  }

 private:
  Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// True if orphaned processes become this process's children: it is a
// child subreaper (session mode, or its embedder made it one) or init.
bool AdoptsOrphans() {
  int subreaper = 0;
  ::prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
  return subreaper != 0 || ::getpid() == 1;
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `text` to the file `name` in directory `dir_fd` (a cgroup file).
absl::Status WriteAt(int dir_fd, const char* name, absl::string_view text) {
  int fd = ::openat(dir_fd, name, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat(name, ": ", std::strerror(errno)));
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return absl::InternalError(absl::StrCat(name, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// True if cgroup.events in `dir_fd` says a process is still in it.
bool Populated(int dir_fd) {
  int fd = ::openat(dir_fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // the cgroup is gone
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  return absl::StrContains(absl::string_view(buf, static_cast<size_t>(n)), "populated 1");
}

// Kills everything in the cgroup directory `path` and its children, then
// removes them (children first). Best effort.
void KillAndRemoveTree(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  WriteAt(fd, "cgroup.kill", "1").IgnoreError();
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (Populated(fd) && absl::Now() < deadline) absl::SleepFor(kPoll);
  ::close(fd);
  if (DIR* dir = ::opendir(path.c_str())) {
    std::vector<std::string> children;
    while (dirent* entry = ::readdir(dir)) {
      if (entry->d_type == DT_DIR && entry->d_name[0] != '.') {
        children.push_back(absl::StrCat(path, "/", entry->d_name));
      }
    }
    ::closedir(dir);
    for (const auto& child : children) ::rmdir(child.c_str());
  }
  ::rmdir(path.c_str());
}

// The cgroup v2 directory this process is in, from /proc/self/cgroup
// ("0::/a/b") and the cgroup2 mount in /proc/self/mountinfo.
absl::StatusOr<std::string> OwnCgroupDir() {
  std::string relative;
  for (absl::string_view line : absl::StrSplit(ReadSmallFile("/proc/self/cgroup"), '\n')) {
    if (absl::ConsumePrefix(&line, "0::")) relative = std::string(line);
  }
  if (relative.empty()) return absl::NotFoundError("no cgroup v2 entry in /proc/self/cgroup");
  for (absl::string_view line : absl::StrSplit(ReadSmallFile("/proc/self/mountinfo"), '\n')) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTS"
    size_t dash = line.find(" - ");
    if (dash == absl::string_view::npos) continue;
    std::vector<absl::string_view> after = absl::StrSplit(line.substr(dash + 3), ' ');
    if (after.empty() || after[0] != "cgroup2") continue;
    std::vector<absl::string_view> before = absl::StrSplit(line.substr(0, dash), ' ');
    if (before.size() < 5) continue;
    absl::string_view root = before[3], mount = before[4];
    absl::string_view rest = relative;
    if (root != "/" && !absl::ConsumePrefix(&rest, root)) continue;
    std::string dir = absl::StrCat(mount, rest);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
  }
  return absl::NotFoundError("no cgroup2 file system is mounted");
}

// Kills and removes the cgroups of exec workers that are gone (crashed):
// taskq-exec-PID-N in `base` whose PID is not running. (A PID reused by
// another process keeps its directory: harmless, and never a wrong kill.)
void RemoveStaleWorkerDirs(const std::string& base) {
  DIR* dir = ::opendir(base.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> stale;
  while (dirent* entry = ::readdir(dir)) {
    absl::string_view name(entry->d_name);
    if (entry->d_type != DT_DIR || !absl::ConsumePrefix(&name, kWorkerDirPrefix)) continue;
    int pid = 0;
    std::vector<absl::string_view> parts = absl::StrSplit(name, '-');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) || pid <= 0) continue;
    if (pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno == EPERM) continue;  // still running
    stale.push_back(absl::StrCat(base, "/", entry->d_name));
  }
  ::closedir(dir);
  for (const auto& path : stale) {
    LogWarning("exec: killing what is left in %s (its worker is gone) and removing it", path);
    KillAndRemoveTree(path);
  }
}

// Makes `base`/taskq-exec-PID-N and checks that a child can be moved
// into a cgroup under it and that cgroup.kill exists. Returns the new
// directory.
absl::StatusOr<std::string> MakeWorkerCgroup(const std::string& base) {
  static std::atomic<uint64_t> counter{0};
  std::string dir;
  for (;;) {
    // A name taken by a process that had our pid before (a reboot ago) is skipped.
    dir = absl::StrCat(base, "/", kWorkerDirPrefix, ::getpid(), "-", ++counter);
    if (::mkdir(dir.c_str(), 0755) == 0) break;
    if (errno != EEXIST || counter > 1000) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", dir, ": ", std::strerror(errno)));
    }
  }
  const std::string probe = dir + "/probe";
  absl::Status status = absl::OkStatus();
  if (::mkdir(probe.c_str(), 0755) != 0) {
    status = absl::FailedPreconditionError(
        absl::StrCat("cannot create ", probe, ": ", std::strerror(errno)));
  } else {
    int fd = ::open(probe.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      status = absl::FailedPreconditionError(
          absl::StrCat("cannot open ", probe, ": ", std::strerror(errno)));
    } else {
      status = ProbeJoinCgroup(fd);
      if (status.ok()) {
        absl::Status kill = WriteAt(fd, "cgroup.kill", "1");
        if (!kill.ok()) {
          status = absl::FailedPreconditionError(
              absl::StrCat(kill.message(), " (cgroup.kill needs Linux 5.14)"));
        }
      }
      ::close(fd);
    }
    ::rmdir(probe.c_str());
  }
  if (!status.ok()) {
    ::rmdir(dir.c_str());
    return status;
  }
  return dir;
}

}  // namespace

absl::StatusOr<std::shared_ptr<ExecContainment>> ExecContainment::Create(
    const std::string& setting) {
  std::string why_not_cgroup;
  if (setting != "off") {
    absl::StatusOr<std::string> base =
        setting == "auto" ? OwnCgroupDir() : absl::StatusOr<std::string>(setting);
    absl::StatusOr<std::string> dir = base;
    if (base.ok()) {
      RemoveStaleWorkerDirs(*base);
      dir = MakeWorkerCgroup(*base);
    }
    if (dir.ok()) {
      return std::shared_ptr<ExecContainment>(
          new ExecContainment(Mode::kCgroup, *dir, absl::StrCat("a cgroup per task under ", *dir)));
    }
    if (setting != "auto") {
      return absl::FailedPreconditionError(
          absl::StrCat("--exec-cgroup ", setting, ": ", dir.status().message()));
    }
    why_not_cgroup = std::string(dir.status().message());
  }
  // Orphans of a task's processes must come to us, not to init.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("exec: prctl(PR_SET_CHILD_SUBREAPER): ", std::strerror(errno)));
  }
  std::string description =
      setting == "off"
          ? "process sessions and a subreaper (--exec-cgroup off)"
          : absl::StrCat("process sessions and a subreaper (no cgroup: ", why_not_cgroup, ")");
  return std::shared_ptr<ExecContainment>(
      new ExecContainment(Mode::kSession, "", std::move(description)));
}

ExecContainment::~ExecContainment() {
  if (mode_ == Mode::kCgroup) {
    KillAndRemoveTree(dir_);
  } else {
    Sweep(/*kill_orphans=*/true);
  }
}

absl::StatusOr<std::unique_ptr<TaskProcesses>> ExecContainment::Begin() {
  RetryRemovals();
  std::string cgroup_dir;
  int fd = -1;
  if (mode_ == Mode::kCgroup) {
    uint64_t n;
    {
      MutexLock lock(&mu_);
      n = ++next_task_;
    }
    cgroup_dir = absl::StrCat(dir_, "/task-", n);
    if (::mkdir(cgroup_dir.c_str(), 0755) != 0 ||
        (fd = ::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
      int err = errno;
      ::rmdir(cgroup_dir.c_str());
      return absl::UnavailableError(
          absl::StrCat("exec: cannot create the cgroup ", cgroup_dir, ": ", std::strerror(err)));
    }
  }
  uint64_t registration = RunningTasks::Get().Add();
  return std::unique_ptr<TaskProcesses>(
      new TaskProcesses(shared_from_this(), registration, std::move(cgroup_dir), fd));
}

void ExecContainment::DeferRemoval(std::string path) {
  MutexLock lock(&mu_);
  deferred_.push_back(std::move(path));
}

void ExecContainment::RetryRemovals() {
  std::vector<std::string> paths;
  {
    MutexLock lock(&mu_);
    if (deferred_.empty()) return;
    paths.swap(deferred_);
  }
  for (auto& path : paths) {
    if (int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
      WriteAt(fd, "cgroup.kill", "1").IgnoreError();  // what did not die yet
      ::close(fd);
    }
    if (::rmdir(path.c_str()) != 0 && errno == EBUSY) DeferRemoval(std::move(path));
  }
}

int ExecContainment::Sweep(bool kill_orphans, pid_t keep) {
  const pid_t self = ::getpid();
  const pid_t self_sid = ::getsid(0);
  absl::flat_hash_set<pid_t> leaders;
  uint64_t oldest_running = std::numeric_limits<uint64_t>::max();
  // A child being spawned (no leader yet) is younger than its entry.
  uint64_t spawning_since = std::numeric_limits<uint64_t>::max();
  for (const auto& entry : RunningTasks::Get().Snapshot()) {
    oldest_running = std::min(oldest_running, entry.start_ticks);
    if (entry.leader == 0) spawning_since = std::min(spawning_since, entry.start_ticks);
    if (entry.leader > 0) leaders.insert(entry.leader);
  }
  // Only children: a task's leader and what we adopted. Leaders are their
  // tasks' own to reap.
  auto skip = [&](pid_t pid) { return pid == keep || leaders.contains(pid); };
  int signalled = 0;
  for (const ProcStat& p : ListDescendants(self, skip, /*depth=*/1)) {
    if (p.ppid != self || p.sid == self_sid || skip(p.pid)) continue;
    if (p.state == 'Z') {
      if (p.start_ticks < spawning_since) ReapIfSame(p);
      continue;
    }
    if (!kill_orphans || leaders.contains(p.sid)) continue;  // in a running task's session
    if (oldest_running <= p.start_ticks) continue;  // it may be a running task's
    if (SignalIfSame(p, SIGKILL)) ++signalled;
  }
  return signalled;
}

TaskProcesses::~TaskProcesses() {
  Unregister();
  if (cgroup_fd_ >= 0) ::close(cgroup_fd_);
  if (!cgroup_dir_.empty() && ::rmdir(cgroup_dir_.c_str()) != 0 && errno == EBUSY) {
    owner_->DeferRemoval(cgroup_dir_);
  }
}

void TaskProcesses::SetLeader(pid_t pid) {
  leader_ = pid;
  RunningTasks::Get().SetLeader(registration_, pid);
}

void TaskProcesses::Unregister() {
  if (!registered_) return;
  registered_ = false;
  RunningTasks::Get().Remove(registration_);
}

void TaskProcesses::Terminate() {
  if (leader_ > 0) ::kill(-leader_, SIGTERM);
}

bool TaskProcesses::KillAllAndCheck() {
  if (cgroup_fd_ >= 0) {
    WriteAt(cgroup_fd_, "cgroup.kill", "1").IgnoreError();
    return Populated(cgroup_fd_);
  }
  if (leader_ <= 0) return false;
  // The leader is not reaped yet, so its pid still names this task's
  // group and session (and a session id stays taken while any member of
  // the session lives).
  ::kill(-leader_, SIGKILL);
  // Every process of the task descends from this one: from the leader, or
  // adopted by it (the subreaper) when its parent died; never from another
  // task's leader, whose trees are left out. The leader itself is watched
  // through its pidfd (it can be exiting but not yet a zombie here), and a
  // session leader cannot leave its process group, so the kill above
  // reached it.
  absl::flat_hash_set<pid_t> other_leaders;
  for (const auto& entry : RunningTasks::Get().Snapshot()) {
    if (entry.leader > 0 && entry.leader != leader_) other_leaders.insert(entry.leader);
  }
  auto skip = [&](pid_t pid) { return other_leaders.contains(pid); };
  bool any = false;
  for (const ProcStat& p : ListDescendants(::getpid(), skip)) {
    if (p.sid != leader_ || p.state == 'Z' || p.pid == leader_) continue;
    any = true;
    SignalIfSame(p, SIGKILL);
  }
  return any;
}

rt::Task<bool> TaskProcesses::KillAndWait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  bool gone = false;
  for (;;) {
    if (!KillAllAndCheck()) {
      gone = true;
      break;
    }
    if (absl::Now() >= deadline) break;
    // Fails at once when the scheduler shuts down: the deadline still ends it.
    if (!(co_await rt::SleepFor(kPoll)).ok()) absl::SleepFor(kPoll);
  }
  // No longer running: its own leftovers must not be spared as possibly
  // belonging to it.
  Unregister();
  const bool kill_orphans = owner_->mode() == ExecContainment::Mode::kSession;
  // Nothing to do in cgroup mode unless orphans come to this process.
  if (!kill_orphans && !AdoptsOrphans()) co_return gone;
  for (int round = 0; round < kSweepRounds; ++round) {
    if (ExecContainment::Sweep(kill_orphans, leader_) == 0) break;
    if (!(co_await rt::SleepFor(kPoll)).ok()) absl::SleepFor(kPoll);
  }
  co_return gone;
}

}  // namespace taskq
