#include "worker/worker_metrics.h"

#include "common/process_metrics.h"

namespace taskq {

WorkerMetrics::WorkerMetrics(const HandlerRegistry* handlers) : handlers_(handlers) {
  running_ = registry_.AddGauge("taskq_worker_tasks_running", "Handlers running now.");
  tasks_ = registry_.AddCounterFamily(
      "taskq_worker_tasks_total",
      "Handlers that returned, by handler (names not registered on this worker count as "
      "\"other\") and outcome (done: a result; failed: an error).",
      {"handler", "outcome"});
  handler_seconds_ = registry_.AddHistogramFamily(
      "taskq_worker_handler_seconds", "Time from a handler's start to its return, by handler.",
      {"handler"}, metrics::LatencySecondsBuckets());
  connected_ = registry_.AddGauge("taskq_worker_connected",
                                  "Work streams up now: 1 while the stream to the master is up, else 0 (in cluster mode "
                                  "one stream per master).");
  master_connected_ = registry_.AddGaugeFamily(
      "taskq_worker_master_connected",
      "1 while the Work stream to this master is up, else 0 (one per master in cluster mode).",
      {"master"});
  reconnects_ = registry_.AddCounter(
      "taskq_worker_reconnects_total",
      "Times the Work stream came up again after it had been up (master restart, network cut).");
  credits_ = registry_.AddCounter("taskq_worker_credits_granted_total",
                                  "Credits (free task slots) offered to the master.");
  registry_.AddCollector(metrics::CollectProcess);
}

std::string WorkerMetrics::HandlerLabel(absl::string_view handler) const {
  return handlers_->Has(handler) ? std::string(handler) : "other";
}

void WorkerMetrics::TaskStarted() { running_->Add(1); }

void WorkerMetrics::TaskFinished(absl::string_view handler, bool ok, absl::Duration took) {
  running_->Add(-1);
  const std::string label = HandlerLabel(handler);
  tasks_->With({label, ok ? "done" : "failed"})->Add();
  handler_seconds_->With({label})->Observe(absl::ToDoubleSeconds(took));
}

void WorkerMetrics::Connected(bool reconnect) {
  connected_->Add(1);
  if (reconnect) reconnects_->Add();
}

void WorkerMetrics::Disconnected() { connected_->Add(-1); }

void WorkerMetrics::MasterConnected(const std::string& master, bool up) {
  master_connected_->With({master})->Set(up ? 1 : 0);
}

void WorkerMetrics::CreditsGranted(uint32_t n) { credits_->Add(n); }

}  // namespace taskq
