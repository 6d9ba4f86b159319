// CpuQuota: a CPU cgroup with a bandwidth limit (e.g. 25 % of one core),
// so that a program a test or bench starts in it is CPU-bound the way it
// would be on a small machine of its own.
//
//   cgroup v2:  /sys/fs/cgroup/<name>/cpu.max = "QUOTA PERIOD" (the root's
//               cgroup.subtree_control gets +cpu if it lacks it)
//   cgroup v1:  /sys/fs/cgroup/cpu/<name>/cpu.cfs_quota_us, cpu.cfs_period_us
//
// Programs enter it from their first instruction: Wrap() prefixes argv
// with `sh -c 'echo $$ > CGROUP/cgroup.procs && exec "$@"'`, so every
// thread they make is limited. Names are tq<pid>-cpu-<n>-<label>: the
// destructor kills what is left inside and removes the cgroup, and Create
// first sweeps cgroups of runs that died (their pid is gone), as
// TestNetwork does for namespaces.
//
// Needs root and a cpu controller; WhyUnavailable() says why not.
// Thread-safety: none; use from one thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace taskq::testing {

class CpuQuota {
 public:
  // "" when a quota can be made here, else why not (for a skip).
  static std::string WhyUnavailable();
  // "cgroup v2" or "cgroup v1", "" if none works.
  static std::string Kind();

  // A cgroup limited to `cores` of CPU time (0.25 = a quarter of a core,
  // per 100 ms period). `label` ends its name (e.g. "master1").
  static absl::StatusOr<std::unique_ptr<CpuQuota>> Create(const std::string& label,
                                                          double cores);
  ~CpuQuota();
  CpuQuota(const CpuQuota&) = delete;
  CpuQuota& operator=(const CpuQuota&) = delete;

  // `argv` started inside the cgroup (see above).
  std::vector<std::string> Wrap(std::vector<std::string> argv) const;
  const std::string& path() const { return path_; }
  double cores() const { return cores_; }
  // Times the group was throttled (its quota ran out in a period) so far.
  long Throttled() const;

  // Removes cgroups named tq<pid>-cpu-* whose pid is dead.
  static void SweepLeftovers();

 private:
  CpuQuota() = default;
  std::string path_;
  std::string procs_;  // the file a pid is written to, to enter
  double cores_ = 0;
};

}  // namespace taskq::testing
