// Crash test for the durable master: kill -9 of the master, again and again,
// while two producers put square tasks, two workers run them and a consumer
// leases and completes their results. After every round the master restarts
// on the same --data-dir; at the end every put the master acknowledged has
// exactly one result with the right payload, no task has two results, and
// both queues are empty.
//
//   TASKQ_CRASH_ROUNDS  number of kills (default 5; tests/crash_soak.sh runs 20)
//   TASKQ_CRASH_SEED    replays the random delays of a run (printed as "seed")
//   TASKQ_CRASH_MASTER_ARGS  extra master flags, space-separated (e.g.
//                       "--fsync never": kill -9 must lose nothing either)
//
// What a put's answer means here: OK = acknowledged, the master promised the
// tasks (they must yield one result each). Any error (UNAVAILABLE while the
// master is down, a reply lost in the crash) = unknown: the tasks may or may
// not exist, so their results are allowed, but still at most one per task.
// A failed put is never retried with the same payloads: the producer puts
// new ones, so every payload number belongs to at most one put attempt.
//
// The consumer also checks the leases of result messages: one whose
// Complete was acknowledged is never delivered again; one it leased and
// never completed (it holds every 50th) is delivered again; and a Complete
// that failed because the master died is sent again to the next master,
// which must refuse it (a lease from before a restart settles nothing).
//
// Lines starting with "[crash]" are the per-round log and the summary
// (tests/crash_soak.sh prints them).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/channel.h"
#include "common/client.h"
#include "common/grpc_status.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

constexpr char kTasks[] = "crash-tasks";
constexpr char kResults[] = "crash-results";
constexpr size_t kBatch = 50;  // tasks per put
constexpr int kProducers = 2;
// Acknowledged tasks still without a result, at most: producers wait for
// room beyond this, so the final drain stays short.
constexpr size_t kMaxOutstanding = 1000;
// Put attempts per producer, at most (a bound, not a target).
constexpr int kMaxPutsPerProducer = 20000;
// Progress a round needs before its kill: new acknowledged puts (tasks)
// and new distinct results since the round started.
constexpr size_t kRoundProgress = 200;
constexpr absl::Duration kMaxKillDelay = absl::Milliseconds(300);
// Pause before retrying a call that failed (the master is down): a retry
// pace, not synchronisation.
constexpr absl::Duration kRetryPause = absl::Milliseconds(20);
constexpr absl::Duration kRoundTimeout = absl::Seconds(30);
constexpr absl::Duration kRecoverTimeout = absl::Seconds(30);
constexpr absl::Duration kDrainTimeout = absl::Seconds(60);

std::string Square(int64_t n) { return absl::StrCat(n, " * ", n, " = ", n * n); }

// The n of a "n * n = n²" payload, or -1.
int64_t SquareOf(const std::string& payload) {
  size_t star = payload.find(" * ");
  int64_t n = -1;
  if (star == std::string::npos || !absl::SimpleAtoi(payload.substr(0, star), &n)) return -1;
  return n;
}

// An unsigned number from the environment, or `fallback` if unset/invalid.
uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  uint64_t n = 0;
  if (v == nullptr || *v == '\0') return fallback;
  if (!absl::SimpleAtoi(v, &n)) {
    ADD_FAILURE() << name << "=" << v << " is not a number";
    return fallback;
  }
  return n;
}

std::string Ms(absl::Duration d) { return absl::StrCat(absl::ToInt64Milliseconds(d), " ms"); }

using ErrorTally = absl::flat_hash_map<absl::StatusCode, size_t>;

// "UNAVAILABLE x3, ..." or "none".
std::string Tally(const ErrorTally& errors) {
  std::vector<std::string> parts;
  for (const auto& [code, n] : errors) {
    parts.push_back(absl::StrCat(absl::StatusCodeToString(code), " x", n));
  }
  std::sort(parts.begin(), parts.end());
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

// One result message as the consumer saw it.
struct SeenResult {
  uint64_t result_of = 0;
  std::string payload;
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  int deliveries = 0;  // how often the consumer got it
};

// Counters for the log (copies of the ledger's).
struct Snapshot {
  size_t acked_tasks = 0;        // tasks of acknowledged puts
  size_t acked_with_result = 0;  // of those, with at least one result
  size_t unknown_tasks = 0;      // tasks of failed puts (may or may not exist)
  size_t failed_puts = 0;
  size_t results = 0;      // distinct result messages
  size_t redelivered = 0;  // a result message seen again (same id)
  // Completes of leases just handed out that failed other than with
  // UNAVAILABLE (those go stale, see Load::Consume): refused
  // (FAILED_PRECONDITION) or another error. Normally 0.
  size_t complete_refused = 0;
  size_t complete_failed = 0;
  size_t get_failed = 0;
};

// What the producers and the consumer saw, shared between their threads
// and the test. Thread-safety: every method is safe from any thread.
class Ledger {
 public:
  // A put of `ns` (payload numbers) was acknowledged with `ids`.
  void Acked(const std::vector<uint64_t>& ids, const std::vector<int64_t>& ns,
             absl::Time call_start) {
    MutexLock lock(&mu_);
    for (size_t i = 0; i < ids.size() && i < ns.size(); ++i) {
      if (!acked_.emplace(ids[i], ns[i]).second) {
        // A restarted master handed out an id again.
        ProblemLocked(absl::StrCat("task id ", ids[i], " acknowledged twice"));
        continue;
      }
      // Its result may have come before the put's reply.
      if (by_task_.contains(ids[i])) ++acked_with_result_;
    }
    NoteServedLocked(call_start);
    changed_.SignalAll();
  }

  // A put of `ns` failed: the tasks' fate is unknown.
  void PutFailed(const std::vector<int64_t>& ns, const absl::Status& status) {
    MutexLock lock(&mu_);
    ++failed_puts_;
    unknown_ns_.insert(ns.begin(), ns.end());
    ++put_errors_[status.code()];
  }

  void GotResults(const std::vector<v1::Delivery>& deliveries, absl::Time call_start) {
    MutexLock lock(&mu_);
    for (const v1::Delivery& d : deliveries) {
      const v1::Task& t = d.task();
      SeenResult seen{t.result_of(), t.payload(), t.outcome()};
      auto [it, inserted] = results_.emplace(t.id(), seen);
      ++it->second.deliveries;
      if (!inserted) {
        ++redelivered_;
        if (completed_.contains(t.id())) {
          ProblemLocked(absl::StrCat("result message ", t.id(), " (of task ", seen.result_of,
                                     ") delivered again after its Complete was acknowledged"));
        }
        if (it->second.result_of != seen.result_of || it->second.payload != seen.payload) {
          ProblemLocked(absl::StrCat("result message ", t.id(), " came back changed: was ",
                                     it->second.result_of, " '", it->second.payload, "', now ",
                                     seen.result_of, " '", seen.payload, "'"));
        }
        continue;
      }
      std::vector<uint64_t>& of_task = by_task_[seen.result_of];
      of_task.push_back(t.id());
      if (of_task.size() == 1 && acked_.contains(seen.result_of)) ++acked_with_result_;
    }
    NoteServedLocked(call_start);
    changed_.SignalAll();
  }

  // The Completes of these result messages were acknowledged: they are
  // gone for good and must never be delivered again.
  void Completed(const std::vector<uint64_t>& result_ids) {
    MutexLock lock(&mu_);
    completed_.insert(result_ids.begin(), result_ids.end());
  }

  // The answer of a restarted master to a Complete quoting a lease granted
  // before the restart: anything but OK (FAILED_PRECONDITION, or NOT_FOUND
  // if the old master had completed it and the reply was lost).
  void StaleCompleteAnswered(uint64_t result_id, uint64_t lease_id, const absl::Status& status) {
    MutexLock lock(&mu_);
    ++stale_answers_[status.code()];
    if (status.ok()) {
      ProblemLocked(absl::StrCat("a restarted master accepted lease ", lease_id, " of result ",
                                 result_id, " granted before the restart"));
    }
  }
  std::string StaleAnswers() {
    MutexLock lock(&mu_);
    return Tally(stale_answers_);
  }

  // The consumer keeps this result's lease without settling it: the
  // result must be delivered again (after the next restart or when the
  // lease expires).
  void Held(uint64_t result_id) {
    MutexLock lock(&mu_);
    held_.insert(result_id);
  }
  bool WasHeld(uint64_t result_id) {
    MutexLock lock(&mu_);
    return held_.contains(result_id);
  }
  size_t HeldCount() {
    MutexLock lock(&mu_);
    return held_.size();
  }

  void GetFailed(const absl::Status& status) {
    MutexLock lock(&mu_);
    ++get_failed_;
    ++get_errors_[status.code()];
  }
  void CompleteFailed(const absl::Status& status) {
    MutexLock lock(&mu_);
    if (status.code() == absl::StatusCode::kFailedPrecondition) {
      ++complete_refused_;
    } else {
      ++complete_failed_;
    }
  }

  // Starts timing "serving again": the first successful put or get that
  // started at or after `t`.
  void MarkDown(absl::Time t) {
    MutexLock lock(&mu_);
    down_since_ = t;
    served_again_ = absl::InfiniteFuture();
  }
  // When the first such call finished (InfiniteFuture: none yet).
  absl::Time ServedAgain() {
    MutexLock lock(&mu_);
    return served_again_;
  }

  // Waits (up to `timeout`) while too many acknowledged tasks have no
  // result yet; returns at once when `stop` is set.
  void WaitForRoom(const Notification& stop, absl::Duration timeout) {
    MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + timeout;
    while (!stop.HasBeenNotified() && acked_.size() - acked_with_result_ >= kMaxOutstanding) {
      if (changed_.WaitWithDeadline(&mu_, deadline)) return;
    }
  }
  void Wake() { changed_.SignalAll(); }

  Snapshot Counts() {
    MutexLock lock(&mu_);
    Snapshot s;
    s.acked_tasks = acked_.size();
    s.acked_with_result = acked_with_result_;
    s.unknown_tasks = unknown_ns_.size();
    s.failed_puts = failed_puts_;
    s.results = results_.size();
    s.redelivered = redelivered_;
    s.complete_refused = complete_refused_;
    s.complete_failed = complete_failed_;
    s.get_failed = get_failed_;
    return s;
  }

  // "UNAVAILABLE x3, ..." or "none".
  std::string PutErrors() {
    MutexLock lock(&mu_);
    return Tally(put_errors_);
  }
  std::string GetErrors() {
    MutexLock lock(&mu_);
    return Tally(get_errors_);
  }

  // Everything that breaks the contract; empty = all good. `limit` caps the
  // list (the count is always reported).
  std::vector<std::string> Verify(size_t limit = 20) {
    MutexLock lock(&mu_);
    std::vector<std::string> out(problems_.begin(),
                                 problems_.begin() + std::min(problems_.size(), limit));
    size_t count = problems_.size() + problems_dropped_;
    auto report = [&](std::string what) {
      ++count;
      if (out.size() < limit) out.push_back(std::move(what));
    };
    // (1) every acknowledged task: exactly one result, OK, the right square.
    for (const auto& [id, n] : acked_) {
      auto it = by_task_.find(id);
      if (it == by_task_.end()) {
        report(absl::StrCat("acknowledged task ", id, " (payload ", n, ") has no result"));
        continue;
      }
      for (uint64_t rid : it->second) {
        const SeenResult& r = results_.at(rid);
        if (r.outcome != v1::OUTCOME_OK || r.payload != Square(n)) {
          report(absl::StrCat("task ", id, " (payload ", n, ") has result ", rid, " outcome ",
                              v1::Outcome_Name(r.outcome), " payload '", r.payload, "', want '",
                              Square(n), "'"));
        }
      }
    }
    // A leased result message whose lease was never settled comes back.
    for (uint64_t rid : held_) {
      if (results_.at(rid).deliveries < 2) {
        report(absl::StrCat("result message ", rid, " (of task ", results_.at(rid).result_of,
                            ") was leased, never completed, and never delivered again"));
      }
    }
    // (2)+(3) no task has two result messages; results of unacknowledged
    // tasks come from failed puts, one task per payload.
    absl::flat_hash_map<int64_t, uint64_t> unknown_task_of_n;
    for (const auto& [task, rids] : by_task_) {
      if (rids.size() > 1) {
        report(absl::StrCat("task ", task, " has ", rids.size(),
                            " result messages: ", absl::StrJoin(rids, ", ")));
      }
      if (acked_.contains(task)) continue;
      const SeenResult& r = results_.at(rids.front());
      const int64_t n = SquareOf(r.payload);
      if (r.outcome != v1::OUTCOME_OK || n < 0 || r.payload != Square(n) ||
          !unknown_ns_.contains(n)) {
        report(absl::StrCat("unacknowledged task ", task, " has result ", rids.front(), " outcome ",
                            v1::Outcome_Name(r.outcome), " payload '", r.payload,
                            "' that no failed put sent"));
        continue;
      }
      auto [it, inserted] = unknown_task_of_n.emplace(n, task);
      if (!inserted) {
        report(absl::StrCat("payload ", n, " of one failed put ran as two tasks: ", it->second,
                            " and ", task));
      }
    }
    if (count > out.size()) out.push_back(absl::StrCat("... ", count - out.size(), " more"));
    return out;
  }

  // How many results belong to tasks whose put was not acknowledged.
  size_t UnackedWithResult() {
    MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& [task, rids] : by_task_) n += acked_.contains(task) ? 0 : 1;
    return n;
  }

 private:
  // Something seen while the load ran that breaks the contract.
  void ProblemLocked(std::string what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (problems_.size() < 100) {
      problems_.push_back(std::move(what));
    } else {
      ++problems_dropped_;
    }
  }

  void NoteServedLocked(absl::Time call_start) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (call_start >= down_since_ && served_again_ == absl::InfiniteFuture()) {
      served_again_ = absl::Now();
    }
  }

  Mutex mu_;
  CondVar changed_;
  absl::flat_hash_map<uint64_t, int64_t> acked_ ABSL_GUARDED_BY(mu_);       // task id -> n
  absl::flat_hash_set<int64_t> unknown_ns_ ABSL_GUARDED_BY(mu_);            // n of failed puts
  absl::flat_hash_map<uint64_t, SeenResult> results_ ABSL_GUARDED_BY(mu_);  // by result id
  absl::flat_hash_set<uint64_t> completed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> held_
      ABSL_GUARDED_BY(mu_);  // result ids, never completed  // result ids, Complete OK
  // result_of -> distinct result message ids, in arrival order.
  absl::flat_hash_map<uint64_t, std::vector<uint64_t>> by_task_ ABSL_GUARDED_BY(mu_);
  size_t acked_with_result_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failed_puts_ ABSL_GUARDED_BY(mu_) = 0;
  size_t redelivered_ ABSL_GUARDED_BY(mu_) = 0;
  size_t complete_refused_ ABSL_GUARDED_BY(mu_) = 0;
  size_t complete_failed_ ABSL_GUARDED_BY(mu_) = 0;
  size_t get_failed_ ABSL_GUARDED_BY(mu_) = 0;
  ErrorTally put_errors_ ABSL_GUARDED_BY(mu_);
  ErrorTally get_errors_ ABSL_GUARDED_BY(mu_);
  ErrorTally stale_answers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
  size_t problems_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time down_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time served_again_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

// The producer and consumer threads. Stopped and joined on destruction, so
// a failed assertion never leaves a thread running. Thread-safety: methods
// are called from the test's thread only.
class Load {
 public:
  explicit Load(Ledger* ledger) : ledger_(ledger) {}
  ~Load() {
    StopProducers();
    StopConsumer();
  }

  void StartProducer(std::unique_ptr<Client> client) {
    producers_.emplace_back([this, c = std::move(client)] { Produce(*c); });
  }
  void StartConsumer(std::unique_ptr<Client> client) {
    consumer_ = std::thread([this, c = std::move(client)] { Consume(*c); });
  }
  void StopProducers() {
    stop_producers_.Notify();
    ledger_->Wake();
    for (std::thread& t : producers_) {
      if (t.joinable()) t.join();
    }
  }
  void StopConsumer() {
    stop_consumer_.Notify();
    if (consumer_.joinable()) consumer_.join();
  }

 private:
  // Between retries while the master is down; a stop ends it at once.
  void Pause(const Notification& stop) { stop.WaitForNotificationWithTimeout(kRetryPause); }

  void Produce(Client& client) {
    PutOptions options;
    options.timeout = absl::Seconds(10);  // never waits (unbounded queue); a bound on a hang
    for (int attempt = 0;
         attempt < kMaxPutsPerProducer && !stop_producers_.HasBeenNotified(); ++attempt) {
      ledger_->WaitForRoom(stop_producers_, absl::Seconds(1));
      if (stop_producers_.HasBeenNotified()) break;
      std::vector<int64_t> ns;
      std::vector<v1::TaskSpec> specs;
      for (size_t i = 0; i < kBatch; ++i) {
        // Unique across producers and attempts; n² fits in 64 bits.
        const int64_t n = next_n_.fetch_add(1) + 1;
        ns.push_back(n);
        v1::TaskSpec spec;
        spec.set_payload(absl::StrCat(n));
        spec.set_handler("square");
        spec.set_reply_to(kResults);
        specs.push_back(std::move(spec));
      }
      const absl::Time start = absl::Now();
      absl::StatusOr<std::vector<uint64_t>> ids = client.Put(kTasks, std::move(specs), options);
      if (ids.ok() && ids->size() == ns.size()) {
        ledger_->Acked(*ids, ns, start);
      } else {
        // A reply of the wrong size is not an acknowledgement we understand.
        ledger_->PutFailed(ns,
                           ids.ok() ? absl::InternalError("wrong number of ids") : ids.status());
        Pause(stop_producers_);
      }
    }
  }

  void Consume(Client& client) {
    GetOptions get;
    get.max_tasks = 100;
    get.timeout = absl::Milliseconds(200);
    get.lease = true;
    // Leases whose Complete failed with UNAVAILABLE: their master died.
    // Quoted again to the next master, which must refuse them.
    std::vector<Lease> stale;
    uint64_t delivered = 0;
    // A bound on the loop, far above what a run needs (a round's Gets
    // number in the tens).
    for (int i = 0; i < 1000000 && !stop_consumer_.HasBeenNotified(); ++i) {
      const absl::Time start = absl::Now();
      absl::StatusOr<std::vector<v1::Delivery>> got = client.Get(kResults, get);
      if (!got.ok()) {
        if (got.status().code() == absl::StatusCode::kDeadlineExceeded) continue;  // empty
        ledger_->GetFailed(got.status());
        Pause(stop_consumer_);
        continue;
      }
      ledger_->GotResults(*got, start);
      std::vector<Lease> leases;
      for (const v1::Delivery& d : *got) {
        // Every 50th result message is held once: its lease is never settled.
        if (++delivered % 50 == 0 && !ledger_->WasHeld(d.task().id())) {
          ledger_->Held(d.task().id());
          continue;
        }
        leases.push_back({d.task().id(), d.lease_id()});
      }
      std::vector<uint64_t> completed;
      for (const auto& [lease, status] : CompleteAll(client, leases)) {
        if (status.ok()) {
          completed.push_back(lease.task_id);
        } else if (absl::IsUnavailable(status)) {
          stale.push_back(lease);
        } else {
          ledger_->CompleteFailed(status);
        }
      }
      ledger_->Completed(completed);

      // This Get was served, so a master is up again: a new one if any
      // lease went stale (only a kill breaks the connection here).
      std::vector<Lease> still_stale;
      for (const auto& [lease, status] : CompleteAll(client, stale)) {
        if (absl::IsUnavailable(status)) {
          if (still_stale.size() < 10000) still_stale.push_back(lease);  // down again
        } else {
          ledger_->StaleCompleteAnswered(lease.task_id, lease.lease_id, status);
        }
      }
      stale = std::move(still_stale);
    }
  }

  struct Lease {
    uint64_t task_id;
    uint64_t lease_id;
  };

  // Completes the leases (result messages: no result payload), all calls in
  // flight at once: one sync call each would make the consumer the
  // bottleneck, since every completion waits for its fsync. Returns each
  // lease with the master's answer.
  std::vector<std::pair<Lease, absl::Status>> CompleteAll(Client& client,
                                                          const std::vector<Lease>& leases) {
    struct Call {
      Lease lease;
      grpc::ClientContext context;
      v1::CompleteRequest request;
      v1::CompleteResponse response;
    };
    std::vector<std::unique_ptr<Call>> calls;
    Mutex mu;
    CondVar done_cv;
    std::vector<std::pair<Lease, absl::Status>> answers;
    for (const Lease& lease : leases) {
      auto call = std::make_unique<Call>();
      call->lease = lease;
      PrepareContext(&call->context, client.token(), absl::Seconds(10));
      call->request.set_task_id(lease.task_id);
      call->request.set_lease_id(lease.lease_id);
      Call* raw = call.get();
      calls.push_back(std::move(call));
      client.stub()->async()->Complete(&raw->context, &raw->request, &raw->response,
                                       [&, raw](grpc::Status status) {
                                         MutexLock lock(&mu);
                                         answers.emplace_back(raw->lease, ToAbslStatus(status));
                                         done_cv.SignalAll();
                                       });
    }
    // Every call has a 10 s deadline, so every callback runs.
    MutexLock lock(&mu);
    while (answers.size() < calls.size()) done_cv.Wait(&mu);
    return answers;
  }

  Ledger* const ledger_;
  std::atomic<int64_t> next_n_{0};
  Notification stop_producers_;
  Notification stop_consumer_;
  std::vector<std::thread> producers_;
  std::thread consumer_;
};

// ready + leased + delayed of `queue`, or -1 if the call failed.
int64_t Pending(Client& client, const std::string& queue, v1::QueueStats* stats = nullptr) {
  absl::StatusOr<v1::QueueStats> s = client.Stats(queue);
  if (!s.ok()) return -1;
  if (stats != nullptr) *stats = *s;
  return static_cast<int64_t>(s->ready() + s->leased() + s->delayed());
}

// "min/median/max" in ms.
std::string Spread(std::vector<absl::Duration> times) {
  if (times.empty()) return "-";
  std::sort(times.begin(), times.end());
  return absl::StrCat(absl::ToInt64Milliseconds(times.front()), "/",
                      absl::ToInt64Milliseconds(times[times.size() / 2]), "/",
                      absl::ToInt64Milliseconds(times.back()));
}

std::string Describe(const Snapshot& s) {
  return absl::StrCat("acked tasks ", s.acked_tasks, " (", s.acked_with_result,
                      " with result), results ", s.results, ", unknown tasks ", s.unknown_tasks,
                      ", redelivered results ", s.redelivered);
}

std::unique_ptr<Client> NewClient(const Cluster& cluster) {
  absl::StatusOr<Connection> conn = cluster.Connect();
  if (!conn.ok()) {
    ADD_FAILURE() << conn.status();
    return nullptr;
  }
  ClientOptions options;
  options.call_timeout = absl::Seconds(10);
  options.wait_margin = absl::Seconds(3);
  return std::make_unique<Client>(conn->channel, conn->token, options);
}

// How long after `since` a brand-new client is served: its own channel and
// connection (a local subchannel pool; by default gRPC would share the load
// clients' connection and its reconnect backoff), so this is the master's
// readiness as a fresh `taskq` command sees it. InfiniteDuration: never.
absl::Duration NewClientServedAfter(const Cluster& cluster, absl::Time since) {
  absl::StatusOr<Connection> conn = cluster.Connect();
  if (!conn.ok()) return absl::InfiniteDuration();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  ClientOptions options;
  options.call_timeout = absl::Seconds(2);
  Client client(
      grpc::CreateCustomChannel(cluster.address(), grpc::InsecureChannelCredentials(), args),
      conn->token, options);
  const absl::Time deadline = absl::Now() + kRecoverTimeout;
  while (absl::Now() < deadline) {
    if (client.Stats(kTasks).ok()) return absl::Now() - since;
    // A retry pace, bounded by the deadline.
    absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::InfiniteDuration();
}

TEST(Crash, MasterKilledUnderLoadLosesNoAcknowledgedPutAndDuplicatesNoResult) {
  const uint64_t rounds = std::max<uint64_t>(1, EnvNumber("TASKQ_CRASH_ROUNDS", 5));
  const uint64_t seed = EnvNumber("TASKQ_CRASH_SEED", std::random_device{}());
  std::cout << "[crash] seed " << seed << ", rounds " << rounds
            << " (replay the delays: TASKQ_CRASH_SEED=" << seed << ")" << std::endl;
  SCOPED_TRACE(absl::StrCat("TASKQ_CRASH_SEED=", seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> delay_ms(0, absl::ToInt64Milliseconds(kMaxKillDelay));
  const absl::Time test_start = absl::Now();

  const char* extra = std::getenv("TASKQ_CRASH_MASTER_ARGS");
  std::vector<std::string> master_args =
      absl::StrSplit(extra == nullptr ? "" : extra, ' ', absl::SkipEmpty());
  if (!master_args.empty()) {
    std::cout << "[crash] master flags: " << absl::StrJoin(master_args, " ") << std::endl;
  }

  Cluster cluster;
  absl::Status s = cluster.Start(master_args);
  ASSERT_TRUE(s.ok()) << s;
  std::unique_ptr<Client> admin = NewClient(cluster);
  ASSERT_NE(admin, nullptr);
  // Many crashes must not give a task up: each one counts an attempt of
  // whatever was leased at that moment (tasks and results alike).
  for (const char* name : {kTasks, kResults}) {
    v1::QueueConfig config;
    config.set_name(name);
    config.set_max_attempts(1000);
    config.set_backoff_ms(10);
    config.set_backoff_max_ms(100);
    // Held results (see Consume) not freed by a restart come back soon.
    if (std::string(name) == kResults) config.set_lease_ms(2000);
    absl::StatusOr<v1::QueueConfig> created = admin->CreateQueue(config);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  std::vector<Process*> workers;
  for (int i = 0; i < 2; ++i) {
    Process* w = cluster.StartWorker(
        {"--concurrency", "4", "--queue", kTasks, "--id", absl::StrCat("crash-worker-", i + 1)});
    ASSERT_TRUE(cluster.WaitWorkerConnected(w)) << (w ? w->Stderr() : "not started");
    workers.push_back(w);
  }

  Ledger ledger;
  Load load(&ledger);  // after `cluster`: its threads stop before the master does
  for (int i = 0; i < kProducers; ++i) {
    std::unique_ptr<Client> c = NewClient(cluster);
    ASSERT_NE(c, nullptr);
    load.StartProducer(std::move(c));
  }
  {
    std::unique_ptr<Client> c = NewClient(cluster);
    ASSERT_NE(c, nullptr);
    load.StartConsumer(std::move(c));
  }

  // Per round: load clients served again, a new client served.
  std::vector<absl::Duration> serve_times, new_client_times;
  Snapshot previous_kill;
  for (uint64_t round = 1; round <= rounds; ++round) {
    const Snapshot before = ledger.Counts();
    const absl::Time round_start = absl::Now();
    ASSERT_TRUE(WaitFor(
        [&] {
          Snapshot now = ledger.Counts();
          return now.acked_tasks >= before.acked_tasks + kRoundProgress &&
                 now.results >= before.results + kRoundProgress;
        },
        kRoundTimeout))
        << "round " << round << ": no progress within " << kRoundTimeout << ": "
        << Describe(ledger.Counts()) << "; put errors: " << ledger.PutErrors();
    const absl::Duration delay = absl::Milliseconds(delay_ms(rng));
    // The randomness is the test: where in the load the kill lands.
    absl::SleepFor(delay);

    std::vector<size_t> connects;
    for (Process* w : workers) connects.push_back(Count(w->Stderr(), "connected to"));
    const Snapshot at_kill = ledger.Counts();
    const absl::Time kill = absl::Now();
    ledger.MarkDown(kill);
    s = cluster.RestartMaster(SIGKILL);
    ASSERT_TRUE(s.ok()) << "round " << round << ": " << s;
    const absl::Duration restart_took = absl::Now() - kill;
    const absl::Duration new_client = NewClientServedAfter(cluster, kill);
    ASSERT_NE(new_client, absl::InfiniteDuration())
        << "round " << round << ": a new client was not served within " << kRecoverTimeout;

    for (size_t i = 0; i < workers.size(); ++i) {
      ASSERT_TRUE(WaitFor([&] { return Count(workers[i]->Stderr(), "connected to") > connects[i]; },
                          kRecoverTimeout, absl::Milliseconds(10)))
          << "round " << round << ": worker " << i + 1 << " did not reconnect:\n"
          << workers[i]->Stderr();
      ASSERT_TRUE(workers[i]->Running()) << workers[i]->Stderr();
    }
    const absl::Duration workers_back = absl::Now() - kill;
    ASSERT_TRUE(
        WaitFor([&] { return ledger.ServedAgain() != absl::InfiniteFuture(); }, kRecoverTimeout))
        << "round " << round
        << ": no client call succeeded after the restart: " << Describe(ledger.Counts())
        << "; put errors: " << ledger.PutErrors();
    const absl::Duration served = ledger.ServedAgain() - kill;
    serve_times.push_back(served);
    new_client_times.push_back(new_client);

    std::cout << "[crash] round " << round << "/" << rounds << ": load " << Ms(kill - round_start)
              << " (random extra " << Ms(delay) << "), acked tasks " << at_kill.acked_tasks << " (+"
              << at_kill.acked_tasks - previous_kill.acked_tasks << "), results " << at_kill.results
              << " (+" << at_kill.results - previous_kill.results << "), master up after "
              << Ms(restart_took) << ", new client served after " << Ms(new_client)
              << ", workers reconnected after " << Ms(workers_back)
              << ", load clients served again after " << Ms(served) << std::endl;
    previous_kill = at_kill;
  }

  // Last round done: no more puts; every acknowledged task must now get
  // its result, and both queues must empty out.
  load.StopProducers();
  const absl::Time drain_start = absl::Now();
  ASSERT_TRUE(WaitFor(
      [&] {
        Snapshot now = ledger.Counts();
        return now.acked_with_result == now.acked_tasks;
      },
      kDrainTimeout))
      << "acknowledged tasks without a result after " << kDrainTimeout << ": "
      << Describe(ledger.Counts()) << "\nproblems:\n"
      << absl::StrJoin(ledger.Verify(), "\n");
  ASSERT_TRUE(
      WaitFor([&] { return Pending(*admin, kTasks) == 0 && Pending(*admin, kResults) == 0; },
              kDrainTimeout, absl::Milliseconds(20)))
      << "queues did not drain: tasks pending " << Pending(*admin, kTasks) << ", results pending "
      << Pending(*admin, kResults);
  const absl::Duration drain_took = absl::Now() - drain_start;
  load.StopConsumer();

  // (1)-(3): the ledger.
  const std::vector<std::string> problems = ledger.Verify();
  EXPECT_TRUE(problems.empty()) << "seed " << seed << ":\n" << absl::StrJoin(problems, "\n");

  // (4): nothing left anywhere, nothing given up.
  for (const char* name : {kTasks, kResults}) {
    v1::QueueStats stats;
    EXPECT_EQ(Pending(*admin, name, &stats), 0) << name;
    EXPECT_EQ(stats.ready(), 0u) << name;
    EXPECT_EQ(stats.leased(), 0u) << name;
    EXPECT_EQ(stats.delayed(), 0u) << name;
    EXPECT_EQ(stats.dead(), 0u) << name;
    EXPECT_EQ(stats.unfinished(), 0u) << name;
  }

  const Snapshot end = ledger.Counts();
  std::cout << "[crash] summary: seed " << seed << ", " << rounds << " kills in "
            << Ms(absl::Now() - test_start) << "; acknowledged tasks " << end.acked_tasks
            << "; failed puts " << end.failed_puts << " (" << end.unknown_tasks
            << " tasks, errors: " << ledger.PutErrors() << "), of those tasks ran anyway "
            << ledger.UnackedWithResult() << "; distinct results " << end.results
            << ", results delivered again " << end.redelivered << " (held on purpose "
            << ledger.HeldCount() << "); completes refused " << end.complete_refused << ", failed "
            << end.complete_failed
            << ", stale leases quoted to the next master: " << ledger.StaleAnswers()
            << "; failed gets " << end.get_failed << " (" << ledger.GetErrors() << "); final drain "
            << Ms(drain_took) << "; " << (problems.empty() ? "OK" : "PROBLEMS (see above)")
            << std::endl;
  std::cout << "[crash] summary: served again after a kill, ms (min/median/max): load clients "
            << Spread(serve_times) << ", a new client " << Spread(new_client_times) << std::endl;
}

}  // namespace
}  // namespace taskq::testing
