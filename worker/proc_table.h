// Reading the process table (/proc) to find an exec task's leftover
// processes, and acting on one only if it is still the process that was
// read: each action goes through a pidfd opened after a second look at
// the process's start time, so a recycled pid is never signalled or
// reaped by mistake.
//
// Thread-safety: functions only; safe from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

namespace taskq {

struct ProcStat {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgid = 0;
  pid_t sid = 0;
  char state = '?';          // 'R', 'S', 'Z', ...
  uint64_t start_ticks = 0;  // clock ticks after boot (as BootTicksNow)
};

// /proc/PID/stat, or nullopt if the process is gone.
std::optional<ProcStat> ReadProcStat(pid_t pid);
// Every process visible in /proc (a snapshot: it may change meanwhile).
std::vector<ProcStat> ListProcesses();
// The descendants of `root` (children, their children, ...; `depth` 1 =
// children only), found through /proc/PID/task/TID/children: cheaper than
// ListProcesses on a busy host. A pid for which `skip` says true is left
// out with its subtree (without reading it). Falls back to every process
// when the kernel lacks those files (CONFIG_PROC_CHILDREN), so callers
// must still filter.
std::vector<ProcStat> ListDescendants(pid_t root, const std::function<bool(pid_t)>& skip = nullptr,
                                      int depth = std::numeric_limits<int>::max());
// Now, in the unit of ProcStat::start_ticks.
uint64_t BootTicksNow();

// Sends `signal` to `p` if it is still the same process; true if sent.
bool SignalIfSame(const ProcStat& p, int signal);
// Reaps `p` (a zombie child of this process) if it is still the same
// process; true if reaped.
bool ReapIfSame(const ProcStat& p);

}  // namespace taskq
