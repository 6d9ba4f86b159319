// Model-based randomized test of the queue engine. A plain reference model
// (a list of tasks with a state each, no cleverness) runs the same random
// operations as a TaskEngine on a FakeClock: puts (with delays,
// priorities, dedup keys), takes and leases, completions, retryable and
// permanent failures, releases, heartbeats, time passing (lease expiry,
// delayed tasks coming due, now and then far ahead), cancels, dead-letter
// requeues, queue purge, shutdown (graceful and immediate), settings
// updates, deleting and re-creating the queue (and its dead-letter queue),
// and a worker that connects, grants credits and disconnects. After every
// operation the
// engine must agree with the model: the same tasks handed out in the same
// order (FIFO / LIFO / priority then put order), the same results (at most
// one per task and life), the same counts, every task present in the state
// the model says (no task lost), retry delays inside the jitter window, and
// no task handed out before its not-before time (put delay, release delay,
// retry backoff), checked against the times alone, not the model's states.
//
// The durable variant runs the same model against an engine on the SQLite
// store with a memory budget of (almost) nothing, so ready tasks go cold and
// are read back from the store, and adds the master restarting (every task
// back in the state the model says, leases lost with the attempt counted),
// puts of thousands of tasks and credit windows beyond one read-back batch
// (> 1024): every acknowledged task stays in exactly one state, counted, and
// is delivered or finished (issue 12: cold tasks once vanished).
// Both variants check the results owed to the reply queue
// (QueueStats.pending_results) against the model after every operation.
//
// Fixed seeds; a failure names the seed and the operation index.
// TASKQ_MODEL_SEQUENCES=N runs N sequences instead (for bug hunts).
#include <stdlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "master/engine/task_engine.h"
#include "master/sqlite_store.h"
#include "common/runtime/sanitizers.h"

namespace taskq {
namespace {

// The model runs on one thread, so ThreadSanitizer (30x slower here) has
// nothing to find in it that the other builds miss: fewer sequences there.
#ifdef TASKQ_TSAN
constexpr int kSequences = 40;
constexpr int kDurableSequences = 8;
#else
constexpr int kSequences = 200;
constexpr int kDurableSequences = 25;
#endif
constexpr int kOpsPerSequence = 300;

int Sequences(int fallback) {
  const char* env = std::getenv("TASKQ_MODEL_SEQUENCES");
  int n = env ? std::atoi(env) : 0;
  return n > 0 ? n : fallback;
}

// kForgotten: its queue (or the dead-letter set holding it) was deleted.
enum class MState { kDelayed, kReady, kLeased, kDead, kDone, kCancelled, kFailed, kForgotten };

v1::TaskState ToProto(MState s) {
  switch (s) {
    case MState::kDelayed: return v1::TASK_STATE_DELAYED;
    case MState::kReady: return v1::TASK_STATE_READY;
    case MState::kLeased: return v1::TASK_STATE_LEASED;
    case MState::kDead: return v1::TASK_STATE_DEAD;
    case MState::kDone: return v1::TASK_STATE_DONE;
    case MState::kCancelled: return v1::TASK_STATE_CANCELLED;
    case MState::kFailed: return v1::TASK_STATE_FAILED;
    case MState::kForgotten: return v1::TASK_STATE_UNSPECIFIED;
  }
  return v1::TASK_STATE_UNSPECIFIED;
}

// One task as the model sees it.
struct MTask {
  uint64_t id = 0;
  int priority = 0;
  std::string key;  // dedup key
  MState state = MState::kReady;
  uint32_t attempt = 0;
  int64_t place = 0;  // order among ready tasks, assigned when it last became ready
  int64_t due_ms = 0;  // while delayed
  uint64_t delay_order = 0;  // ties among equal due times
  uint64_t lease_id = 0;
  int64_t lease_deadline_ms = 0;
  bool by_worker = false;
  // A retry delay to check against the engine after this operation.
  int64_t backoff_d = 0;
  // Earliest time it may be handed out (not-before, release delay, or the
  // shortest retry backoff), from the times alone.
  int64_t earliest_ms = 0;
  // Finished before the master last restarted: the engine no longer
  // remembers it (GetTask says NOT_FOUND).
  bool forgotten_by_restart = false;
};

class ModelRun {
 public:
  ModelRun(uint32_t seed, bool durable) : seed_(seed), durable_(durable), rng_(seed) {
    kind_ = std::vector<v1::QueueKind>{v1::QUEUE_KIND_FIFO, v1::QUEUE_KIND_LIFO,
                                       v1::QUEUE_KIND_PRIORITY}[Rand(0, 2)];
    maxsize_ = Rand(0, 1) ? 0 : Rand(4, 15);
    max_attempts_ = Rand(1, 4);
    lease_ms_ = Rand(100, 400);
    backoff_ms_ = Rand(1, 40);
    backoff_max_ms_ = backoff_ms_ + Rand(0, 150);
    dlq_ = Rand(0, 1) ? "q" : "dlq";
    dlq_exists_ = dlq_ == "q";
    if (durable_) {
      char tmpl[] = "/tmp/taskq-model-XXXXXX";
      dir_ = mkdtemp(tmpl);
      // No budget at all, or room for a few dozen tasks.
      memory_budget_ = Chance(50) ? 0 : 40'000;
    }
    OpenEngine();
    v1::QueueConfig c = QueueConfig();
    auto created = engine_->CreateQueue(c, false);
    EXPECT_TRUE(created.ok()) << created.status();
    c.set_name("r");  // results, in the order they were produced
    c.set_kind(v1::QUEUE_KIND_FIFO);
    c.set_maxsize(0);
    c.clear_dead_letter();
    EXPECT_TRUE(engine_->CreateQueue(c, false).ok());
  }

  // Queue "q" as the model's settings say.
  v1::QueueConfig QueueConfig() const {
    v1::QueueConfig c;
    c.set_name("q");
    c.set_kind(kind_);
    c.set_maxsize(maxsize_);
    c.set_max_attempts(max_attempts_);
    c.set_lease_ms(lease_ms_);
    c.set_backoff_ms(backoff_ms_);
    c.set_backoff_max_ms(backoff_max_ms_);
    if (dlq_ != "q") c.set_dead_letter(dlq_);
    return c;
  }

  ~ModelRun() {
    if (sub_) engine_->Unsubscribe(*sub_);
    engine_.reset();
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // A new engine (on the store in dir_ when durable, recovered from it).
  void OpenEngine() {
    EngineOptions options;
    options.random_seed = seed_ + 1000 + restarts_;
    if (!durable_) {
      engine_ = std::make_unique<TaskEngine>(options, &clock_);
      return;
    }
    options.memory_budget_bytes = memory_budget_;
    // Ready tasks go cold; delayed ones are never refused for memory here.
    options.pinned_budget_bytes = size_t{1} << 30;
    SqliteStoreOptions store_options;
    store_options.dir = dir_ + "/data";
    store_options.fsync = FsyncPolicy::kNever;
    auto store = SqliteStore::Open(std::move(store_options));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    engine_ = std::make_unique<TaskEngine>(options, &clock_);
    absl::Status s = engine_->Recover(store_.get());
    ASSERT_TRUE(s.ok()) << s;
  }

  void Run() {
    for (op_ = 0; op_ < kOpsPerSequence && !Failed(); ++op_) {
      RandomOp();
      if (!Failed()) Check(op_ % 10 == 0);
    }
    Drain();
  }

 private:
  bool Failed() const { return ::testing::Test::HasFailure(); }
  // With a store, Put/Get replies wait for their write to be committed (on
  // the store's thread): wait until everything written so far is.
  void Sync() {
    Notification done;
    engine_->WhenDurable([&](absl::Status) { done.Notify(); });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30))) << Where();
  }
  int Rand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(int percent) { return Rand(1, 100) <= percent; }
  int64_t Now() const { return absl::ToUnixMillis(clock_.Now()); }
  std::string Where() const {
    return absl::StrCat("seed ", seed_, " op ", op_, " (", last_op_, "); queue kind ", kind_,
                        " maxsize ", maxsize_, " max_attempts ", max_attempts_, " lease ",
                        lease_ms_, " backoff ", backoff_ms_, "..", backoff_max_ms_, " dlq ", dlq_,
                        shut_down_ ? " shut down" : "", " now ", Now());
  }

  // --- the model's rules ---------------------------------------------------------------

  // The engine's order of ready tasks for this queue kind.
  std::tuple<int64_t, int64_t, uint64_t> OrderKey(const MTask& t) const {
    switch (kind_) {
      case v1::QUEUE_KIND_LIFO: return {0, -t.place, t.id};
      case v1::QUEUE_KIND_PRIORITY: return {t.priority, t.place, t.id};
      default: return {0, t.place, t.id};
    }
  }
  MTask* NextReady() {
    MTask* best = nullptr;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kReady && (!best || OrderKey(t) < OrderKey(*best))) best = &t;
    }
    return best;
  }
  size_t Count(MState s) const {
    size_t n = 0;
    for (const auto& [id, t] : tasks_) n += t.state == s;
    return n;
  }
  void MakeReady(MTask& t) {
    t.state = MState::kReady;
    t.place = ++places_;
  }
  void MakeDelayed(MTask& t, int64_t due_ms) {
    t.state = MState::kDelayed;
    t.due_ms = due_ms;
    t.delay_order = ++delay_orders_;
  }
  // Frees t's dedup key if t holds it (after a delete and re-create of the
  // queue another task may hold the same key).
  void FreeKey(const MTask& t) {
    auto it = dedup_.find(t.key);
    if (!t.key.empty() && it != dedup_.end() && it->second == t.id) dedup_.erase(it);
  }
  void Finish(MTask& t, MState final_state, std::optional<v1::Outcome> result) {
    FreeKey(t);
    t.state = final_state;
    if (result) expected_results_.push_back({t.id, *result});
  }
  void Die(MTask& t) {
    t.state = MState::kDead;
    dlq_exists_ = true;
    expected_results_.push_back({t.id, v1::OUTCOME_FAILED});
  }
  // A lease ends without completing; the attempt counts.
  void LoseLease(MTask& t, bool disconnected) {
    stale_.push_back({t.id, t.lease_id});
    if (t.attempt >= max_attempts_) {
      Die(t);
    } else if (disconnected) {
      t.state = MState::kReady;  // back in its old place
    } else {
      int64_t d = backoff_ms_;
      for (uint32_t i = 1; i < t.attempt && d < backoff_max_ms_; ++i) d *= 2;
      t.backoff_d = std::min<int64_t>(d, backoff_max_ms_);
      t.earliest_ms = Now() + (t.backoff_d + 1) / 2;
      MakeDelayed(t, 0);  // due read from the engine after the step
    }
  }
  // The invariant this model was extended for: nothing is handed out
  // before its time, whatever the states say.
  void CheckNotEarly(uint64_t id) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    EXPECT_GE(Now(), it->second.earliest_ms)
        << "task " << id << " handed out " << it->second.earliest_ms - Now()
        << " ms before its not-before time; " << Where();
  }
  void Lease(MTask& t, bool by_worker) {
    t.state = MState::kLeased;
    ++t.attempt;
    t.by_worker = by_worker;
    t.lease_deadline_ms = Now() + lease_ms_;
  }
  // What the engine does at the end of every step: feed the worker.
  void Settle() {
    while (sub_ && credits_ > 0) {
      MTask* t = NextReady();
      if (!t) break;
      --credits_;
      Lease(*t, true);
      expected_deliveries_.push_back(t->id);
    }
  }

  // --- operations ------------------------------------------------------------------------

  void RandomOp() {
    if (durable_) {
      const int d = Rand(1, 100);
      if (d <= 2) return Restart();
      if (d <= 4 && maxsize_ == 0 && !shut_down_) return BulkPut();
      if (d <= 7 && tasks_.size() > 1024) return BigCredit();
    }
    int r = Rand(1, 112);
    if (r > 100) return QueueOp(r - 100);
    if (r <= 20) return Put();
    if (r <= 26) return Take();
    if (r <= 36) return LeaseSome();
    if (r <= 48) return Complete();
    if (r <= 56) return Fail();
    if (r <= 61) return Release();
    if (r <= 65) return Extend();
    if (r <= 79) return Advance(Rand(1, lease_ms_ * 3 / 2));
    if (r <= 84) return Cancel();
    if (r <= 88) return Requeue();
    if (r <= 92) return Connect();
    if (r <= 97) return Credit();
    return Disconnect();
  }

  // Thousands of plain tasks: more than one read-back batch when cold.
  void BulkPut() {
    const int n = Rand(1025, 2500);
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < n; ++i) {
      v1::TaskSpec s;
      s.set_payload(absl::StrCat("bulk", ++payloads_, std::string(Rand(0, 64), 'x')));
      s.set_priority(Rand(0, 3));
      s.set_reply_to("r");
      specs.push_back(std::move(s));
    }
    PutSpecs(std::move(specs), absl::StrCat("bulk put ", n));
  }

  void Put() {
    int n = Rand(1, 3);
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < n; ++i) {
      v1::TaskSpec s;
      s.set_payload(absl::StrCat("p", ++payloads_));
      s.set_priority(Rand(0, 3));
      s.set_reply_to("r");
      if (Chance(30)) s.set_dedup_key(absl::StrCat("k", Rand(0, 5)));
      if (Chance(30)) s.set_delay_ms(Rand(1, 300));
      if (Chance(4)) s.set_delay_ms(100'000);  // `taskq put --delay 100`
      if (Chance(10)) s.set_not_before_unix_ms(Now() + Rand(-100, 300));
      specs.push_back(s);
    }
    PutSpecs(std::move(specs), absl::StrCat("put ", n));
  }

  void PutSpecs(std::vector<v1::TaskSpec> specs, std::string what) {
    const int n = static_cast<int>(specs.size());
    // Which are new, by the dedup rule (also within the batch).
    std::map<std::string, int> first_in_batch;
    size_t fresh = 0;
    for (int i = 0; i < n; ++i) {
      const std::string& k = specs[i].dedup_key();
      if (k.empty() || (!dedup_.contains(k) && first_in_batch.emplace(k, i).second)) ++fresh;
    }
    size_t held = Count(MState::kReady) + Count(MState::kDelayed) + Count(MState::kLeased);
    last_op_ = std::move(what);
    if (n <= 3) {
      absl::StrAppend(&last_op_, " (delays");
      for (const auto& s : specs) {
        absl::StrAppend(&last_op_, " ", s.delay_ms(), "/", s.not_before_unix_ms(),
                        s.dedup_key().empty() ? "" : absl::StrCat(" key ", s.dedup_key()));
      }
      absl::StrAppend(&last_op_, ")");
    }
    PutArgs args;
    args.queue = "q";
    args.tasks = specs;
    args.nowait = true;
    std::optional<absl::StatusOr<PutResult>> got;
    engine_->Put(std::move(args), [&](absl::StatusOr<PutResult> r) { got = std::move(r); });
    Sync();
    EXPECT_TRUE(got.has_value()) << Where();
    if (!got) return;
    if (shut_down_) {
      EXPECT_EQ(got->status().code(), absl::StatusCode::kFailedPrecondition) << Where();
      return;
    }
    if (maxsize_ != 0 && fresh > maxsize_) {
      EXPECT_EQ(got->status().code(), absl::StatusCode::kInvalidArgument) << Where();
      return;
    }
    if (maxsize_ != 0 && held + fresh > maxsize_) {
      EXPECT_EQ(got->status().code(), absl::StatusCode::kResourceExhausted) << Where();
      return;
    }
    EXPECT_TRUE(got->ok()) << got->status() << " " << Where();
    if (!got->ok()) return;
    const PutResult& stored = **got;
    EXPECT_EQ(stored.ids.size(), specs.size()) << Where();
    std::map<std::string, uint64_t> batch_ids;
    for (int i = 0; i < n && i < static_cast<int>(stored.ids.size()); ++i) {
      const v1::TaskSpec& s = specs[i];
      const std::string& k = s.dedup_key();
      uint64_t id = stored.ids[i];
      std::optional<uint64_t> existing;
      if (!k.empty() && dedup_.contains(k)) existing = dedup_[k];
      if (!k.empty() && !existing && batch_ids.contains(k)) existing = batch_ids[k];
      EXPECT_EQ(stored.existing[i], existing.has_value()) << "task " << i << " " << Where();
      if (existing) {
        EXPECT_EQ(id, *existing) << Where();
        continue;
      }
      EXPECT_FALSE(tasks_.contains(id)) << "id " << id << " reused; " << Where();
      MTask& t = tasks_[id];
      t.id = id;
      t.priority = s.priority();
      t.key = k;
      if (!k.empty()) batch_ids[k] = id;
      int64_t due = Now() + s.delay_ms();
      if (s.not_before_unix_ms() > 0) due = std::max(due, s.not_before_unix_ms());
      t.earliest_ms = due;
      if (due > Now()) {
        MakeDelayed(t, due);
      } else {
        MakeReady(t);
      }
    }
    for (const auto& [k, id] : batch_ids) dedup_[k] = id;
    Settle();
  }

  // A nowait Get; returns the deliveries after checking them against the model.
  std::vector<v1::Delivery> Get(bool lease, uint32_t max) {
    GetArgs args;
    args.queue = "q";
    args.lease = lease;
    args.max_tasks = max;
    args.nowait = true;
    std::optional<absl::StatusOr<std::vector<v1::Delivery>>> got;
    engine_->Get(std::move(args), [&](auto r) { got = std::move(r); });
    Sync();
    EXPECT_TRUE(got.has_value()) << Where();
    if (!got) return {};
    std::vector<uint64_t> want;
    for (uint32_t i = 0; i < max; ++i) {
      MTask* t = NextReady();
      if (!t) break;
      want.push_back(t->id);
      if (lease) {
        Lease(*t, false);
      } else {
        ++t->attempt;
        Finish(*t, MState::kDone, std::nullopt);
      }
    }
    if (want.empty()) {
      EXPECT_EQ(got->status().code(), shut_down_ && Count(MState::kDelayed) == 0
                                          ? absl::StatusCode::kOutOfRange
                                          : absl::StatusCode::kDeadlineExceeded)
          << Where();
      return {};
    }
    EXPECT_TRUE(got->ok()) << got->status() << " " << Where();
    if (!got->ok()) return {};
    std::vector<uint64_t> ids;
    for (const auto& d : **got) {
      ids.push_back(d.task().id());
      CheckNotEarly(d.task().id());
    }
    EXPECT_EQ(ids, want) << "hand-out order; " << Where();
    for (const auto& d : **got) {
      auto it = tasks_.find(d.task().id());
      if (it == tasks_.end()) continue;
      EXPECT_EQ(d.task().attempt(), it->second.attempt) << Where();
      if (lease) {
        it->second.lease_id = d.lease_id();
        EXPECT_EQ(d.lease_deadline_unix_ms(), it->second.lease_deadline_ms) << Where();
      }
    }
    return **got;
  }

  void Take() {
    last_op_ = "take";
    Get(false, Rand(1, 3));
  }
  void LeaseSome() {
    last_op_ = "lease";
    Get(true, Rand(1, 3));
  }

  // A held lease (by a consumer or the worker), or nullptr.
  MTask* RandomHeld() {
    std::vector<MTask*> held;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kLeased) held.push_back(&t);
    }
    return held.empty() ? nullptr : held[Rand(0, static_cast<int>(held.size()) - 1)];
  }
  std::optional<std::pair<uint64_t, uint64_t>> RandomStale() {
    if (stale_.empty()) return std::nullopt;
    return stale_[Rand(0, static_cast<int>(stale_.size()) - 1)];
  }

  void Complete() {
    MTask* t = RandomHeld();
    if (!t || Chance(20)) {
      auto stale = RandomStale();
      if (!stale) return;
      last_op_ = absl::StrCat("complete stale lease ", stale->second);
      EXPECT_EQ(engine_->Complete(stale->first, stale->second, "late").code(),
                absl::StatusCode::kFailedPrecondition)
          << Where();
      return;
    }
    last_op_ = absl::StrCat("complete ", t->id);
    absl::Status s = engine_->Complete(t->id, t->lease_id, absl::StrCat("result ", t->id));
    EXPECT_TRUE(s.ok()) << s << " " << Where();
    stale_.push_back({t->id, t->lease_id});
    Finish(*t, MState::kDone, v1::OUTCOME_OK);
    Settle();
  }

  void Fail() {
    MTask* t = RandomHeld();
    if (!t) return;
    bool permanent = Chance(30);
    last_op_ = absl::StrCat(permanent ? "fail permanently " : "fail ", t->id);
    absl::Status s = engine_->Fail(t->id, t->lease_id, "boom", permanent);
    EXPECT_TRUE(s.ok()) << s << " " << Where();
    if (permanent) {
      stale_.push_back({t->id, t->lease_id});
      Die(*t);
    } else {
      LoseLease(*t, false);
    }
    Settle();
  }

  void Release() {
    MTask* t = RandomHeld();
    if (!t) return;
    int delay = Chance(50) ? 0 : Rand(1, 200);
    last_op_ = absl::StrCat("release ", t->id, " delay ", delay);
    absl::Status s = engine_->Release(t->id, t->lease_id, absl::Milliseconds(delay));
    EXPECT_TRUE(s.ok()) << s << " " << Where();
    stale_.push_back({t->id, t->lease_id});
    --t->attempt;
    if (delay == 0) {
      t->state = MState::kReady;  // its old place
    } else {
      MakeDelayed(*t, Now() + delay);
      t->earliest_ms = Now() + delay;
    }
    Settle();
  }

  void Extend() {
    MTask* t = RandomHeld();
    if (!t || Chance(25)) {
      auto stale = RandomStale();
      if (!stale) return;
      last_op_ = absl::StrCat("extend stale lease ", stale->second);
      auto s = engine_->ExtendLease(stale->second);
      EXPECT_EQ(s.status().code(), revoked_.contains(stale->second)
                                       ? absl::StatusCode::kCancelled
                                       : absl::StatusCode::kFailedPrecondition)
          << Where();
      return;
    }
    last_op_ = absl::StrCat("extend ", t->id);
    auto s = engine_->ExtendLease(t->lease_id);
    EXPECT_TRUE(s.ok()) << s.status() << " " << Where();
    t->lease_deadline_ms = Now() + lease_ms_;
  }

  void Advance(int ms) {
    last_op_ = absl::StrCat("advance ", ms, " ms");
    clock_.Advance(absl::Milliseconds(ms));
    const int64_t now = Now();
    // 1. Leases that expired, oldest deadline first.
    std::vector<MTask*> expired;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kLeased && t.lease_deadline_ms <= now) expired.push_back(&t);
    }
    std::sort(expired.begin(), expired.end(), [](MTask* a, MTask* b) {
      return std::tie(a->lease_deadline_ms, a->lease_id) < std::tie(b->lease_deadline_ms, b->lease_id);
    });
    for (MTask* t : expired) LoseLease(*t, false);
    // 2. Delayed tasks that are due, in due order.
    std::vector<MTask*> due;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kDelayed && t.backoff_d == 0 && t.due_ms <= now) due.push_back(&t);
    }
    std::sort(due.begin(), due.end(), [](MTask* a, MTask* b) {
      return std::tie(a->due_ms, a->delay_order) < std::tie(b->due_ms, b->delay_order);
    });
    for (MTask* t : due) MakeReady(*t);
    engine_->AdvanceTo(clock_.Now());
    // 3. Hand-out.
    Settle();
  }

  void Cancel() {
    uint64_t id;
    if (tasks_.empty() || Chance(5)) {
      id = 1'000'000'000;
    } else {
      auto it = tasks_.begin();
      std::advance(it, Rand(0, static_cast<int>(tasks_.size()) - 1));
      id = it->first;
    }
    last_op_ = absl::StrCat("cancel ", id);
    auto got = engine_->CancelTask(id);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << Where();
      return;
    }
    MTask& t = it->second;
    if (t.state == MState::kForgotten || t.forgotten_by_restart) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << Where();
      return;
    }
    switch (t.state) {
      case MState::kDone:
      case MState::kCancelled:
      case MState::kFailed:
        EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << Where();
        return;
      default:
        break;
    }
    EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
    if (got.ok()) {
      EXPECT_EQ(*got, ToProto(t.state)) << Where();
    }
    if (t.state == MState::kLeased) {
      stale_.push_back({t.id, t.lease_id});
      revoked_.insert(t.lease_id);
    }
    bool was_dead = t.state == MState::kDead;
    Finish(t, MState::kCancelled,
           was_dead ? std::nullopt : std::optional<v1::Outcome>(v1::OUTCOME_CANCELLED));
    Settle();
  }

  void Requeue() {
    std::vector<uint64_t> dead;
    for (const auto& [id, t] : tasks_) {
      if (t.state == MState::kDead) dead.push_back(id);
    }
    bool all = Chance(30);
    uint64_t id = 0;
    if (!all) {
      if (dead.empty() || Chance(10)) {
        id = tasks_.empty() ? 1 : tasks_.begin()->first;  // maybe not dead: NOT_FOUND
      } else {
        id = dead[Rand(0, static_cast<int>(dead.size()) - 1)];
      }
    }
    last_op_ = absl::StrCat("requeue ", all ? "all" : absl::StrCat(id));
    if (!dlq_exists_) {
      EXPECT_EQ(engine_->RequeueDead(dlq_, id).status().code(), absl::StatusCode::kNotFound)
          << Where();
      return;
    }
    auto got = engine_->RequeueDead(dlq_, id);
    if (!all && std::find(dead.begin(), dead.end(), id) == dead.end()) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << Where();
      return;
    }
    if (shut_down_) {  // every dead task comes from "q": they stay dead
      if (all) {
        EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
        if (got.ok()) {
          EXPECT_EQ(*got, 0u) << Where();
        }
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << Where();
      }
      return;
    }
    EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
    std::vector<uint64_t> moved = all ? dead : std::vector<uint64_t>{id};
    if (got.ok()) {
      EXPECT_EQ(*got, moved.size()) << Where();
    }
    for (uint64_t m : moved) {  // by id, as the engine does
      MTask& t = tasks_[m];
      t.attempt = 0;
      if (!t.key.empty()) {
        // Its key stayed taken while dead, unless "q" was re-created and a
        // new task took it: then the requeued task loses its key.
        auto [it, inserted] = dedup_.try_emplace(t.key, m);
        if (!inserted && it->second != m) t.key.clear();
      }
      MakeReady(t);
      results_per_life_.erase(m);  // a new life: it may yield one more result
    }
    Settle();
  }

  void Connect() {
    if (sub_) return Credit();
    last_op_ = "connect";
    auto sub = engine_->Subscribe({"q"}, "w", [this](std::vector<v1::Delivery> ds) {
      for (auto& d : ds) delivered_.push_back(std::move(d));
    });
    EXPECT_TRUE(sub.ok()) << sub.status() << " " << Where();
    if (sub.ok()) sub_ = *sub;
  }

  void Credit() {
    if (!sub_) return Connect();
    int n = Rand(1, 2);
    last_op_ = absl::StrCat("credit ", n);
    EXPECT_TRUE(engine_->AddCredits(*sub_, n).ok()) << Where();
    credits_ += n;
    Settle();
  }

  // A credit window larger than one read-back batch of cold tasks.
  void BigCredit() {
    if (!sub_) Connect();
    if (!sub_) return;
    const int n = Rand(1025, 3000);
    last_op_ = absl::StrCat("credit ", n);
    EXPECT_TRUE(engine_->AddCredits(*sub_, n).ok()) << Where();
    credits_ += n;
    Settle();
  }

  // The master restarts: the worker's stream ends, leased tasks are ready
  // again in their old place with the attempt counted (or given up on their
  // last attempt, in task id order), delayed tasks keep their time, and
  // finished tasks are no longer remembered.
  void Restart() {
    last_op_ = "restart";
    ++restarts_;
    sub_.reset();  // the engine it belonged to is gone
    credits_ = 0;
    engine_.reset();
    store_.reset();
    OpenEngine();
    if (Failed()) return;
    revoked_.clear();
    for (auto& [id, t] : tasks_) {  // by id
      switch (t.state) {
        case MState::kLeased:
          LoseLease(t, /*disconnected=*/true);
          break;
        case MState::kDone:
        case MState::kCancelled:
        case MState::kFailed:
          t.forgotten_by_restart = true;
          break;
        default:
          break;
      }
    }
    // Equal due times are ordered by id after a restart.
    std::vector<MTask*> delayed;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kDelayed) delayed.push_back(&t);
    }
    for (MTask* t : delayed) t->delay_order = ++delay_orders_;  // tasks_ is by id
  }

  void Disconnect() {
    if (!sub_) return;
    last_op_ = "disconnect";
    engine_->Unsubscribe(*sub_);
    sub_.reset();
    credits_ = 0;
    std::vector<MTask*> held;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kLeased && t.by_worker) held.push_back(&t);
    }
    std::sort(held.begin(), held.end(), [](MTask* a, MTask* b) { return a->lease_id < b->lease_id; });
    for (MTask* t : held) LoseLease(*t, true);
  }

  // Queue-level operations: 1-12.
  void QueueOp(int which) {
    if (which <= 2) return Shutdown(false);
    if (which <= 3) return Shutdown(true);
    if (which <= 4) return Purge();
    if (which <= 7) return DeleteAndRecreate();
    if (which <= 8) return DeleteDeadLetterQueue();
    if (which <= 10) return Update();
    return Advance(Rand(20'000, 120'000));  // far: long delays come due
  }

  // Ready tasks in hand-out order, then delayed ones in due order: the
  // order in which a purge or an immediate shutdown drops them.
  std::vector<MTask*> Waiting() {
    std::vector<MTask*> ready, delayed;
    for (auto& [id, t] : tasks_) {
      if (t.state == MState::kReady) ready.push_back(&t);
      if (t.state == MState::kDelayed) delayed.push_back(&t);
    }
    std::sort(ready.begin(), ready.end(),
              [this](MTask* a, MTask* b) { return OrderKey(*a) < OrderKey(*b); });
    std::sort(delayed.begin(), delayed.end(), [](MTask* a, MTask* b) {
      return std::tie(a->due_ms, a->delay_order) < std::tie(b->due_ms, b->delay_order);
    });
    ready.insert(ready.end(), delayed.begin(), delayed.end());
    return ready;
  }
  uint64_t DropWaiting() {
    std::vector<MTask*> dropped = Waiting();
    for (MTask* t : dropped) Finish(*t, MState::kCancelled, v1::OUTCOME_CANCELLED);
    return dropped.size();
  }

  void Shutdown(bool immediate) {
    last_op_ = immediate ? "shutdown immediate" : "shutdown";
    auto got = engine_->ShutdownQueue("q", immediate);
    EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
    shut_down_ = true;
    uint64_t dropped = immediate ? DropWaiting() : 0;
    if (got.ok()) {
      EXPECT_EQ(*got, dropped) << Where();
    }
    Settle();
  }

  void Purge() {
    last_op_ = "purge";
    auto got = engine_->PurgeQueue("q");
    EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
    uint64_t dropped = DropWaiting();
    if (got.ok()) {
      EXPECT_EQ(*got, dropped) << Where();
    }
    Settle();
  }

  void Forget(MTask& t) {
    if (t.state == MState::kLeased) stale_.push_back({t.id, t.lease_id});
    t.state = MState::kForgotten;
  }

  // Deletes "q" with its tasks (and its dead-letter set if it is its own
  // dead-letter queue) and creates it again, maybe of another kind; the
  // worker stays subscribed by name.
  void DeleteAndRecreate() {
    last_op_ = "delete and re-create q";
    EXPECT_TRUE(engine_->DeleteQueue("q").ok()) << Where();
    for (auto& [id, t] : tasks_) {
      bool held = t.state == MState::kReady || t.state == MState::kDelayed ||
                  t.state == MState::kLeased;
      if (held || (t.state == MState::kDead && dlq_ == "q")) Forget(t);
      if (t.state == MState::kDead) t.key.clear();  // dead elsewhere: its key died with q
    }
    dedup_.clear();  // the keys lived in the deleted queue
    shut_down_ = false;
    if (Chance(50)) {
      kind_ = std::vector<v1::QueueKind>{v1::QUEUE_KIND_FIFO, v1::QUEUE_KIND_LIFO,
                                         v1::QUEUE_KIND_PRIORITY}[Rand(0, 2)];
    }
    auto created = engine_->CreateQueue(QueueConfig(), false);
    EXPECT_TRUE(created.ok()) << created.status() << " " << Where();
    Settle();
  }

  void DeleteDeadLetterQueue() {
    if (dlq_ == "q" || !dlq_exists_) return DeleteAndRecreate();
    last_op_ = "delete dlq";
    EXPECT_TRUE(engine_->DeleteQueue(dlq_).ok()) << Where();
    for (auto& [id, t] : tasks_) {
      if (t.state != MState::kDead) continue;
      FreeKey(t);
      Forget(t);
    }
    dlq_exists_ = false;  // created again by the next task that dies
  }

  void Update() {
    v1::QueueConfigUpdate u;
    if (Chance(40)) {
      maxsize_ = Rand(0, 1) ? 0 : Rand(4, 15);
      u.set_maxsize(maxsize_);
    }
    if (Chance(40)) {
      lease_ms_ = Rand(100, 400);
      u.set_lease_ms(lease_ms_);
    }
    if (Chance(40)) {
      max_attempts_ = Rand(1, 4);
      u.set_max_attempts(max_attempts_);
    }
    if (Chance(40)) {
      backoff_ms_ = Rand(1, 40);
      backoff_max_ms_ = backoff_ms_ + Rand(0, 150);
      u.set_backoff_ms(backoff_ms_);
      u.set_backoff_max_ms(backoff_max_ms_);
    }
    last_op_ = absl::StrCat("update ", u.ShortDebugString());
    auto got = engine_->UpdateQueue("q", u);
    EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
    Settle();
  }

  // Finishes every task: time passes, everything is leased and completed.
  void Drain() {
    if (Failed()) return;
    if (sub_) {
      Disconnect();
      Check(true);
    }
    for (int round = 0; round < 100 && !Failed(); ++round) {
      ++op_;
      size_t open = Count(MState::kReady) + Count(MState::kDelayed) + Count(MState::kLeased);
      if (open == 0) break;
      int64_t step = std::max(lease_ms_, 300u) + backoff_max_ms_ + 1;
      for (const auto& [id, t] : tasks_) {
        if (t.state == MState::kDelayed) step = std::max(step, t.due_ms - Now() + 1);
      }
      Advance(static_cast<int>(step));
      Check(false);
      for (const v1::Delivery& d : Get(true, 1000)) {
        MTask& t = tasks_[d.task().id()];
        EXPECT_TRUE(engine_->Complete(t.id, t.lease_id, "drained").ok()) << Where();
        Finish(t, MState::kDone, v1::OUTCOME_OK);
      }
      Check(false);
    }
    if (Failed()) return;
    Check(true);
    for (const auto& [id, t] : tasks_) {
      EXPECT_TRUE(t.state == MState::kDone || t.state == MState::kCancelled ||
                  t.state == MState::kDead || t.state == MState::kForgotten)
          << "task " << id << " unfinished after draining; " << Where();
    }
  }

  // --- invariants ------------------------------------------------------------------------

  void Check(bool full) {
    // Worker deliveries: the same tasks in the same order.
    std::vector<uint64_t> delivered;
    for (const auto& d : delivered_) {
      delivered.push_back(d.task().id());
      CheckNotEarly(d.task().id());
      auto it = tasks_.find(d.task().id());
      if (it == tasks_.end()) continue;
      it->second.lease_id = d.lease_id();
      EXPECT_EQ(d.lease_deadline_unix_ms(), it->second.lease_deadline_ms) << Where();
      EXPECT_EQ(d.task().attempt(), it->second.attempt) << Where();
    }
    EXPECT_EQ(delivered, expected_deliveries_) << "worker hand-out order; " << Where();
    // The worker's stream wrote them (the engine bounds what is unwritten).
    size_t written = 0;
    for (const auto& d : delivered_) written += DeliveryBytes(d);
    if (sub_ && written > 0) engine_->DeliveriesWritten(*sub_, written);
    delivered_.clear();
    expected_deliveries_.clear();

    // Results: the same ones in the same order, at most one per task and life.
    std::vector<std::pair<uint64_t, v1::Outcome>> results;
    for (;;) {
      GetArgs args;
      args.queue = "r";
      args.max_tasks = 1000;
      args.nowait = true;
      std::vector<v1::Delivery> got;
      engine_->Get(std::move(args), [&](auto r) {
        if (r.ok()) got = *std::move(r);
      });
      Sync();
      if (got.empty()) break;
      for (const auto& d : got) results.push_back({d.task().result_of(), d.task().outcome()});
    }
    EXPECT_EQ(results, expected_results_) << "results; " << Where();
    for (const auto& [id, outcome] : results) {
      int& n = results_per_life_[id];
      ++n;
      EXPECT_LE(n, 1) << "task " << id << " yielded two results; " << Where();
    }
    expected_results_.clear();

    // Retry delays: inside [d/2, d]; the model adopts the engine's due time.
    for (auto& [id, t] : tasks_) {
      if (t.backoff_d == 0) continue;
      auto got = engine_->GetTask(id);
      EXPECT_TRUE(got.ok()) << got.status() << " " << Where();
      if (!got.ok()) continue;
      int64_t wait = got->not_before_unix_ms() - Now();
      EXPECT_GE(wait, (t.backoff_d + 1) / 2) << "task " << id << " " << Where();
      EXPECT_LE(wait, t.backoff_d) << "task " << id << " " << Where();
      t.due_ms = got->not_before_unix_ms();
      t.backoff_d = 0;
    }

    // Counts.
    auto stats = engine_->Stats("q");
    EXPECT_TRUE(stats.ok()) << Where();
    if (!stats.ok()) return;
    EXPECT_EQ(stats->ready(), Count(MState::kReady)) << Where();
    EXPECT_EQ(stats->delayed(), Count(MState::kDelayed)) << Where();
    EXPECT_EQ(stats->leased(), Count(MState::kLeased)) << Where();
    EXPECT_EQ(stats->unfinished(),
              Count(MState::kReady) + Count(MState::kDelayed) + Count(MState::kLeased))
        << Where();
    // Results owed to "r" (every task is put with reply_to "r"): one per
    // live task; none once it is dead, finished or forgotten.
    EXPECT_EQ(stats->pending_results(), 0u) << Where();
    auto r_stats = engine_->Stats("r");
    EXPECT_TRUE(r_stats.ok()) << Where();
    if (r_stats.ok()) {
      EXPECT_EQ(r_stats->pending_results(),
                Count(MState::kReady) + Count(MState::kDelayed) + Count(MState::kLeased))
          << "results owed; " << Where();
    }
    auto dlq_stats = engine_->Stats(dlq_);
    EXPECT_EQ(dlq_stats.ok(), dlq_exists_) << Where();
    if (dlq_stats.ok()) {
      EXPECT_EQ(dlq_stats->dead(), Count(MState::kDead)) << Where();
    }

    // Every task where the model says: a few every step, the unfinished
    // ones now and then, all of them at the end.
    std::vector<uint64_t> ids;
    if (full) {
      for (const auto& [id, t] : tasks_) {
        bool finished = t.state == MState::kDone || t.state == MState::kCancelled ||
                        t.state == MState::kFailed || t.state == MState::kForgotten;
        if (!finished || op_ >= kOpsPerSequence) ids.push_back(id);
      }
    } else if (!tasks_.empty()) {
      for (int i = 0; i < 3; ++i) {
        auto it = tasks_.begin();
        std::advance(it, Rand(0, static_cast<int>(tasks_.size()) - 1));
        ids.push_back(it->first);
      }
    }
    for (uint64_t id : ids) {
      const MTask& t = tasks_[id];
      auto got = engine_->GetTask(id);
      if (t.state == MState::kForgotten || t.forgotten_by_restart) {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound)
            << "task " << id << " of a deleted queue; " << Where();
        continue;
      }
      EXPECT_TRUE(got.ok()) << "task " << id << " lost: " << got.status() << " " << Where();
      if (!got.ok()) continue;
      EXPECT_EQ(got->state(), ToProto(t.state)) << "task " << id << " " << Where();
      EXPECT_EQ(got->attempt(), t.attempt) << "task " << id << " " << Where();
      if (t.state == MState::kDelayed) {
        EXPECT_EQ(got->not_before_unix_ms(), t.due_ms) << Where();
      }
      if (t.state == MState::kLeased) {
        EXPECT_EQ(got->worker(), t.by_worker ? "w" : "consumer") << Where();
      }
      if (t.state == MState::kDead) {
        EXPECT_EQ(got->origin_queue(), "q") << Where();
      }
    }
  }

  const uint32_t seed_;
  const bool durable_;
  std::mt19937 rng_;
  FakeClock clock_;
  std::string dir_;  // the store's temp dir (durable)
  size_t memory_budget_ = 0;
  int restarts_ = 0;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<TaskEngine> engine_;
  v1::QueueKind kind_;
  uint64_t maxsize_;
  uint32_t max_attempts_, lease_ms_, backoff_ms_, backoff_max_ms_;
  std::string dlq_;
  bool dlq_exists_ = false;
  bool shut_down_ = false;

  int op_ = 0;
  std::string last_op_;
  int payloads_ = 0;
  int64_t places_ = 0;
  uint64_t delay_orders_ = 0;
  std::map<uint64_t, MTask> tasks_;
  std::map<std::string, uint64_t> dedup_;
  std::vector<std::pair<uint64_t, uint64_t>> stale_;  // (task, lease) no longer held
  std::set<uint64_t> revoked_;                        // leases revoked by cancel
  std::optional<SubscriptionId> sub_;
  uint32_t credits_ = 0;
  std::vector<v1::Delivery> delivered_;
  std::vector<uint64_t> expected_deliveries_;
  std::vector<std::pair<uint64_t, v1::Outcome>> expected_results_;
  std::map<uint64_t, int> results_per_life_;
};

void RunSequences(int sequences, bool durable) {
  SetLogLevel(LogLevel::kError);  // queues come and go by the hundred; requeues are refused
  for (uint32_t seed = 1; seed <= static_cast<uint32_t>(sequences); ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    ModelRun(seed, durable).Run();
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "reproduce with seed " << seed << " (see the op index above)";
      return;
    }
  }
}

TEST(EngineModelTest, RandomSequencesAgreeWithTheReferenceModel) {
  RunSequences(Sequences(kSequences), /*durable=*/false);
}

TEST(EngineModelTest, DurableColdTasksRestartsAndBigCreditWindowsAgreeWithTheModel) {
  RunSequences(Sequences(kDurableSequences), /*durable=*/true);
}

}  // namespace
}  // namespace taskq
