// WorkerMetrics: what a worker's /metrics shows (docs/METRICS.md, "Worker"):
// handlers running now, tasks finished by handler and outcome, handler
// latency by handler, the stream's state (connected, reconnects, credits
// granted) and the process_* series (common/process_metrics.h).
//
// Handler names come from whoever puts a task, so they are not trusted as
// labels: a handler registered on this worker gets its own label value,
// any other name is counted as "other" (at most registered + 1 series per
// family).
//
// Thread-safety: every method is safe from any thread (atomics; a label
// set's series is looked up under the family's mutex).
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "worker/handler_registry.h"

namespace taskq {

class WorkerMetrics {
 public:
  // `handlers` decides which handler names are labels; it must outlive this.
  explicit WorkerMetrics(const HandlerRegistry* handlers);

  // A handler started / returned after `took` (ok: it returned a result).
  void TaskStarted();
  void TaskFinished(absl::string_view handler, bool ok, absl::Duration took);
  // The stream to the master is up (`reconnect`: not the first time) or down.
  void Connected(bool reconnect);
  void Disconnected();
  // The Work stream to one master (its address; "ADDRESS#OWNER" for a
  // queue parked while its owner is down) is up or down. Cluster mode has
  // one per master (docs/CLUSTER.md); the addresses come from the worker's
  // flags and the masters, not from tasks, so they are fine as labels.
  void MasterConnected(const std::string& master, bool up);
  // Credits (free task slots) offered to the master.
  void CreditsGranted(uint32_t n);

  // The exposition (Prometheus text format 0.0.4).
  std::string Render() const { return registry_.Render(); }

 private:
  // `handler` if registered here, else "other".
  std::string HandlerLabel(absl::string_view handler) const;

  const HandlerRegistry* const handlers_;
  metrics::Registry registry_;
  metrics::Gauge* running_;
  metrics::Family<metrics::Counter>* tasks_;
  metrics::Family<metrics::Histogram>* handler_seconds_;
  metrics::Gauge* connected_;
  metrics::Family<metrics::Gauge>* master_connected_;
  metrics::Counter* reconnects_;
  metrics::Counter* credits_;
};

}  // namespace taskq
