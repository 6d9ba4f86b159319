// MasterMetrics: what the master's /metrics shows (docs/METRICS.md lists
// every series): per-queue counts and totals and the worker gauges read
// from the engine at scrape time (TaskEngine::Metrics, one lock), the
// engine's and the store's histograms (atomics), RPCs by method and code
// (master/rpc_metrics.h), refusals by reason (master/refusals.h) and the
// process_* series (common/process_metrics.h).
//
// Queue names are the one unbounded label: a scrape shows the first
// `max_queues` queues by name (taskq_queues says how many there are).
//
// Thread-safety: Render is safe from any thread (the HTTP server's); the
// engine and the store must outlive this object.
#pragma once

#include <cstddef>
#include <string>

#include "common/metrics.h"
#include "master/engine/task_engine.h"
#include "master/sqlite_store.h"

namespace taskq {

inline constexpr size_t kMaxQueuesPerScrape = 1000;

class MasterMetrics {
 public:
  // `store` may be null (--store memory).
  MasterMetrics(TaskEngine* engine, const SqliteStore* store,
                size_t max_queues = kMaxQueuesPerScrape);
  // The exposition (Prometheus text format 0.0.4).
  std::string Render() const { return registry_.Render(); }

 private:
  metrics::Registry registry_;
};

}  // namespace taskq
