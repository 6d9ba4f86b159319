#include "common/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace taskq::metrics {
namespace {

// Seconds since the epoch at which the system booted (/proc/stat btime).
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    double v;
    if (line.rfind("btime ", 0) == 0 && absl::SimpleAtod(line.substr(6), &v)) return v;
  }
  return -1;
}

int OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;  // the directory's own fd
}

}  // namespace

void CollectProcess(TextWriter& w) {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may hold spaces: the
  // fields that matter come after the last ')'.
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
    // f[0] is field 3 (state): field N is f[N - 3].
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    double utime, stime, start, rss;
    if (f.size() > 21 && absl::SimpleAtod(f[14 - 3], &utime) &&
        absl::SimpleAtod(f[15 - 3], &stime) && absl::SimpleAtod(f[22 - 3], &start) &&
        absl::SimpleAtod(f[24 - 3], &rss)) {
      w.Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
               Type::kCounter);
      w.Sample("process_cpu_seconds_total", {}, (utime + stime) / ticks);
      w.Family("process_resident_memory_bytes", "Resident memory size in bytes.", Type::kGauge);
      w.Sample("process_resident_memory_bytes", {}, rss * page);
      if (const double boot = BootTime(); boot >= 0) {
        w.Family("process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", Type::kGauge);
        w.Sample("process_start_time_seconds", {}, boot + start / ticks);
      }
    }
  }
  if (const int fds = OpenFds(); fds >= 0) {
    w.Family("process_open_fds", "Number of open file descriptors.", Type::kGauge);
    w.Sample("process_open_fds", {}, fds);
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    w.Family("process_max_fds", "Maximum number of open file descriptors.", Type::kGauge);
    w.Sample("process_max_fds", {}, static_cast<double>(lim.rlim_cur));
  }
}

}  // namespace taskq::metrics
