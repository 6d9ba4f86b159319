// Process metrics with the names every Prometheus client library uses
// (process_resident_memory_bytes, process_cpu_seconds_total,
// process_open_fds, process_max_fds, process_start_time_seconds), read from
// /proc/self at scrape time. Linux only; a file that cannot be read leaves
// its series out.
//
// Thread-safety: stateless; safe from any thread.
#pragma once

#include "common/metrics.h"

namespace taskq::metrics {

// Writes the process_* families.
void CollectProcess(TextWriter& w);

}  // namespace taskq::metrics
