#include "common/log_rate_limit.h"

#include <functional>

namespace taskq {

LogRateLimiter::LogRateLimiter(int max_lines, absl::Duration interval)
    : max_lines_(max_lines), interval_(interval) {}

LogRateLimiter::Site& LogRateLimiter::SlotFor(const char* file, int line) {
  const size_t hash = std::hash<const void*>()(file) * 31 + static_cast<size_t>(line);
  // Open addressing over a few slots; past them the site shares the first.
  for (size_t probe = 0; probe < 8; ++probe) {
    Site& site = sites_[(hash + probe) % kSites];
    if (site.file == nullptr) {
      site.file = file;
      site.line = line;
    }
    if (site.file == file && site.line == line) return site;
  }
  return sites_[hash % kSites];
}

void LogRateLimiter::TakeSummary(Site& site, absl::Time now, std::vector<Summary>* due) {
  if (site.suppressed == 0) return;
  due->push_back({site.file, site.line, site.level, site.suppressed, now - site.window_start});
  site.suppressed = 0;
  --owing_;
}

bool LogRateLimiter::Admit(const char* file, int line, int level, absl::Time now,
                           std::vector<Summary>* due) {
  if (max_lines_ <= 0) return true;
  MutexLock lock(&mu_);
  if (owing_ > 0) {
    for (Site& site : sites_) {
      if (site.suppressed > 0 && now - site.window_start >= interval_) {
        TakeSummary(site, now, due);
        site.lines_in_window = 0;
      }
    }
  }
  Site& site = SlotFor(file, line);
  if (site.lines_in_window == 0 || now - site.window_start >= interval_) {
    site.window_start = now;
    site.lines_in_window = 0;
  }
  if (site.lines_in_window < max_lines_) {
    ++site.lines_in_window;
    return true;
  }
  if (site.suppressed++ == 0) ++owing_;
  site.level = level;
  return false;
}

std::vector<LogRateLimiter::Summary> LogRateLimiter::Flush() {
  std::vector<Summary> due;
  MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (Site& site : sites_) TakeSummary(site, now, &due);
  return due;
}

}  // namespace taskq
