#include "master/master_metrics.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/process_metrics.h"
#include "master/refusals.h"
#include "master/rpc_metrics.h"

namespace taskq {
namespace {

using metrics::TextWriter;
using metrics::Type;

// Label values of taskq_refusals_total{reason}, by Refusal.
constexpr std::array<std::pair<Refusal, const char*>, kRefusalKinds> kRefusalReasons = {{
    {Refusal::kNoToken, "no_token"},
    {Refusal::kWrongToken, "wrong_token"},
    {Refusal::kMalformed, "malformed"},
    {Refusal::kConnectionCap, "connection_cap"},
    {Refusal::kUnauthenticatedCap, "unauthenticated_cap"},
    {Refusal::kIdleUnauthenticated, "idle_unauthenticated"},
    {Refusal::kAcceptError, "accept_error"},
    {Refusal::kPermissionDenied, "permission_denied"},
}};

void CollectEngine(TaskEngine* engine, size_t max_queues, TextWriter& w) {
  const TaskEngine::Sample s = engine->Metrics(max_queues);
  w.Family("taskq_queues",
           absl::StrCat("Queues the master holds (the per-queue series show the first ",
                        max_queues, " by name)."),
           Type::kGauge);
  w.Sample("taskq_queues", {}, static_cast<double>(s.queues));
  w.Family("taskq_queue_tasks", "Tasks in a queue by state (dead: in its dead-letter set).",
           Type::kGauge);
  for (const auto& q : s.first) {
    const std::pair<const char*, uint64_t> states[] = {
        {"ready", q.ready}, {"delayed", q.delayed}, {"leased", q.leased}, {"dead", q.dead}};
    for (const auto& [state, n] : states) {
      w.Sample("taskq_queue_tasks", {{"queue", q.name}, {"state", state}},
               static_cast<double>(n));
    }
  }
  w.Family("taskq_queue_oldest_ready_age_seconds",
           "Since the queue's longest-waiting ready task was put (0 when none is ready).",
           Type::kGauge);
  for (const auto& q : s.first) {
    w.Sample("taskq_queue_oldest_ready_age_seconds", {{"queue", q.name}},
             absl::ToDoubleSeconds(q.oldest_ready_age));
  }
  struct Total {
    const char* name;
    const char* help;
    uint64_t TaskEngine::QueueSample::*field;
  };
  const Total totals[] = {
      {"taskq_queue_puts_total", "Tasks put on a queue (dedup hits not counted).",
       &TaskEngine::QueueSample::puts},
      {"taskq_queue_completions_total", "Tasks of a queue completed (acknowledged done).",
       &TaskEngine::QueueSample::completions},
      {"taskq_queue_failures_total",
       "Tasks of a queue given up (max attempts or a permanent failure).",
       &TaskEngine::QueueSample::failures},
      {"taskq_queue_cancellations_total",
       "Tasks of a queue cancelled (CancelTask, purge, immediate shutdown).",
       &TaskEngine::QueueSample::cancellations},
      {"taskq_queue_deliveries_total", "Leases granted on a queue's tasks (every attempt).",
       &TaskEngine::QueueSample::deliveries},
      {"taskq_queue_redeliveries_total",
       "Leases granted for a retry (attempt 2 or later) of a queue's tasks.",
       &TaskEngine::QueueSample::redeliveries},
      {"taskq_queue_lease_expiries_total", "Leases on a queue's tasks that ran out.",
       &TaskEngine::QueueSample::expiries},
  };
  for (const Total& t : totals) {
    w.Family(t.name, t.help, Type::kCounter);
    for (const auto& q : s.first) {
      w.Sample(t.name, {{"queue", q.name}}, static_cast<double>(q.*t.field));
    }
  }
  w.Family("taskq_workers_connected", "Worker streams (Work RPCs) subscribed now.",
           Type::kGauge);
  w.Sample("taskq_workers_connected", {}, static_cast<double>(s.workers));
  w.Family("taskq_worker_credits",
           "Credits granted by connected workers and not yet used (free task slots).",
           Type::kGauge);
  w.Sample("taskq_worker_credits", {}, static_cast<double>(s.worker_credits));
  w.Family("taskq_task_latency_seconds",
           "From put to completion, per completed task (result messages not counted).",
           Type::kHistogram);
  w.HistogramSamples("taskq_task_latency_seconds", {}, engine->task_latency().Read());
  w.Family("taskq_lease_duration_seconds",
           "How long leases were held until they ended (completed, failed, released, expired, "
           "worker gone).",
           Type::kHistogram);
  w.HistogramSamples("taskq_lease_duration_seconds", {}, engine->lease_duration().Read());
}

void CollectStore(const SqliteStore& store, TextWriter& w) {
  const SqliteStore::Metrics& m = store.metrics();
  w.Family("taskq_store_commit_seconds",
           "Group commits of the store: applying a group of engine steps in one transaction "
           "(with --fsync always, the sync inside COMMIT included).",
           Type::kHistogram);
  w.HistogramSamples("taskq_store_commit_seconds", {}, m.commit_seconds.Read());
  w.Family("taskq_store_fsync_seconds",
           "The master's own fdatasync of the write-ahead log (--fsync interval only).",
           Type::kHistogram);
  w.HistogramSamples("taskq_store_fsync_seconds", {}, m.fsync_seconds.Read());
  w.Family("taskq_store_group_size", "Engine steps (batches) per group commit.",
           Type::kHistogram);
  w.HistogramSamples("taskq_store_group_size", {}, m.group_batches.Read());
  w.Family("taskq_store_written_bytes_total", "Bytes appended to the store's write-ahead log.",
           Type::kCounter);
  w.Sample("taskq_store_written_bytes_total", {},
           static_cast<double>(m.wal_bytes_written.value()));
  w.Family("taskq_store_disk_bytes", "Bytes of the store's files (database and WAL).",
           Type::kGauge);
  w.Sample("taskq_store_disk_bytes", {}, static_cast<double>(store.DiskBytes()));
}

void CollectRefusals(TextWriter& w) {
  w.Family("taskq_refusals_total",
           "What the master turned away, by reason (calls without a valid token, malformed "
           "requests, connections over a cap, denied calls; /metrics requests without a valid "
           "token count as no_token or wrong_token).",
           Type::kCounter);
  for (const auto& [kind, reason] : kRefusalReasons) {
    w.Sample("taskq_refusals_total", {{"reason", reason}},
             static_cast<double>(Refusals().Count(kind)));
  }
}

}  // namespace

MasterMetrics::MasterMetrics(TaskEngine* engine, const SqliteStore* store, size_t max_queues) {
  registry_.AddCollector(
      [engine, max_queues](TextWriter& w) { CollectEngine(engine, max_queues, w); });
  if (store != nullptr) {
    registry_.AddCollector([store](TextWriter& w) { CollectStore(*store, w); });
  }
  registry_.AddCollector([](TextWriter& w) { RpcMetrics::Get().Collect(w); });
  registry_.AddCollector(CollectRefusals);
  registry_.AddCollector(metrics::CollectProcess);
}

}  // namespace taskq
