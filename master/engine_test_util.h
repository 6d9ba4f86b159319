// Test fixture for TaskEngine unit tests: an engine on a FakeClock (moved
// by the test and fired with AdvanceTo: no sleeps, no timer thread) with a
// fixed jitter seed, plus helpers for the calls tests make all the time.
// Thread-safety: none; tests use it from their own thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "common/sync.h"
#include "master/engine/task_engine.h"

namespace taskq {

// Captures the outcome of an async engine call. The in-memory engine calls
// back before returning; on a durable store the reply comes later, from the
// store's thread (Set), and Wait waits for it.
template <typename T>
struct Result {
  Result() = default;
  // `r = {}` starts over.
  Result& operator=(Result&& other) {
    MutexLock lock(&mu);
    value = std::move(other.value);
    return *this;
  }

  std::optional<T> value;
  bool done() const {
    MutexLock lock(&mu);
    return value.has_value();
  }
  void Set(T v) {
    MutexLock lock(&mu);
    value = std::move(v);
    cv.SignalAll();
  }
  // True once the reply is in (at once for the in-memory engine).
  bool Wait(absl::Duration timeout = absl::Seconds(10)) const {
    const absl::Time deadline = absl::Now() + timeout;
    MutexLock lock(&mu);
    while (!value.has_value()) {
      if (cv.WaitWithDeadline(&mu, deadline)) return value.has_value();
    }
    return true;
  }
  mutable Mutex mu;
  mutable CondVar cv;
};

using PutCapture = Result<absl::StatusOr<PutResult>>;
using GetCapture = Result<absl::StatusOr<std::vector<v1::Delivery>>>;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() { Reset({}); }

  // A fresh engine; lease 10 s unless `options` says otherwise.
  void Reset(EngineOptions options) {
    if (options.default_lease == EngineOptions{}.default_lease) {
      options.default_lease = absl::Seconds(10);
    }
    if (options.random_seed == 0) options.random_seed = 42;
    engine_ = std::make_unique<TaskEngine>(options, &clock_);
  }

  // Moves the fake clock and fires what is due.
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    engine_->AdvanceTo(clock_.Now());
  }
  void AdvanceTo(absl::Time t) {
    clock_.Set(t);
    engine_->AdvanceTo(t);
  }

  static v1::TaskSpec Spec(std::string payload, int priority = 0, std::string reply_to = "") {
    v1::TaskSpec s;
    s.set_payload(std::move(payload));
    s.set_priority(priority);
    s.set_reply_to(std::move(reply_to));
    return s;
  }
  static v1::TaskSpec Delayed(std::string payload, absl::Duration delay,
                              std::string reply_to = "") {
    v1::TaskSpec s = Spec(std::move(payload), 0, std::move(reply_to));
    s.set_delay_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(delay)));
    return s;
  }
  static v1::TaskSpec Keyed(std::string payload, std::string dedup_key) {
    v1::TaskSpec s = Spec(std::move(payload));
    s.set_dedup_key(std::move(dedup_key));
    return s;
  }

  // Put (nowait) that must succeed at once; returns the ids.
  std::vector<uint64_t> MustPut(const std::string& queue, std::vector<v1::TaskSpec> specs) {
    PutResult r = MustPutResult(queue, std::move(specs));
    return r.ids;
  }
  PutResult MustPutResult(const std::string& queue, std::vector<v1::TaskSpec> specs) {
    PutCapture r;
    PutAsync(queue, std::move(specs), &r, absl::InfiniteFuture(), /*nowait=*/true);
    EXPECT_TRUE(r.Wait());
    if (!r.done()) return {};
    EXPECT_TRUE(r.value->ok()) << r.value->status();
    return r.value->ok() ? **r.value : PutResult{};
  }
  // The status of a nowait put expected to fail at once.
  absl::Status PutStatus(const std::string& queue, std::vector<v1::TaskSpec> specs) {
    PutCapture r;
    PutAsync(queue, std::move(specs), &r, absl::InfiniteFuture(), /*nowait=*/true);
    EXPECT_TRUE(r.Wait());
    return r.done() ? r.value->status() : absl::UnknownError("put did not finish");
  }

  // Put that may wait until `deadline`.
  WaitId PutAsync(const std::string& queue, std::vector<v1::TaskSpec> specs, PutCapture* r,
                  absl::Time deadline = absl::InfiniteFuture(), bool nowait = false) {
    PutArgs args;
    args.queue = queue;
    args.tasks = std::move(specs);
    args.nowait = nowait;
    args.deadline = deadline;
    return engine_->Put(std::move(args), [r](auto stored) { r->Set(std::move(stored)); });
  }

  WaitId GetAsync(const std::string& queue, GetCapture* r, bool lease = false, uint32_t max = 1,
                  absl::Time deadline = absl::InfiniteFuture(), bool nowait = false) {
    GetArgs args;
    args.queue = queue;
    args.lease = lease;
    args.max_tasks = max;
    args.deadline = deadline;
    args.nowait = nowait;
    return engine_->Get(std::move(args), [r](auto got) { r->Set(std::move(got)); });
  }

  // Get (nowait) that must return at once.
  std::vector<v1::Delivery> MustGet(const std::string& queue, bool lease = false,
                                    uint32_t max = 1) {
    GetCapture r;
    GetAsync(queue, &r, lease, max, absl::InfiniteFuture(), /*nowait=*/true);
    EXPECT_TRUE(r.Wait());
    if (!r.done()) return {};
    EXPECT_TRUE(r.value->ok()) << r.value->status();
    return r.value->ok() ? **r.value : std::vector<v1::Delivery>{};
  }
  // Leases exactly one task, or fails the test.
  v1::Delivery MustLease(const std::string& queue) {
    std::vector<v1::Delivery> d = MustGet(queue, /*lease=*/true);
    EXPECT_EQ(d.size(), 1u);
    return d.empty() ? v1::Delivery{} : d[0];
  }
  // The status of a nowait get expected to fail.
  absl::Status GetStatus(const std::string& queue) {
    GetCapture r;
    GetAsync(queue, &r, false, 1, absl::InfiniteFuture(), /*nowait=*/true);
    EXPECT_TRUE(r.Wait());
    return r.done() ? r.value->status() : absl::UnknownError("get did not finish");
  }

  static std::vector<std::string> Payloads(const std::vector<v1::Delivery>& ds) {
    std::vector<std::string> out;
    for (const auto& d : ds) out.push_back(d.task().payload());
    return out;
  }

  // Takes up to `max` ready tasks of `queue` from another engine (e.g. the
  // target of a move) without waiting.
  static std::vector<v1::Delivery> MustTakeFrom(TaskEngine& engine, const std::string& queue,
                                                uint32_t max) {
    GetArgs args;
    args.queue = queue;
    args.max_tasks = max;
    args.nowait = true;
    GetCapture got;
    engine.Get(std::move(args), [&got](auto r) { got.Set(std::move(r)); });
    EXPECT_TRUE(got.Wait());
    EXPECT_TRUE(got.value->ok()) << got.value->status();
    return got.value->ok() ? **std::move(got.value) : std::vector<v1::Delivery>{};
  }

  v1::QueueStats Stats(const std::string& q) {
    auto s = engine_->Stats(q);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::QueueStats{};
  }

  v1::Task MustGetTask(uint64_t id) {
    auto t = engine_->GetTask(id);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : v1::Task{};
  }

  void CreateQueue(const std::string& name, v1::QueueKind kind, uint64_t maxsize = 0,
                   uint32_t max_attempts = 0) {
    v1::QueueConfig c;
    c.set_name(name);
    c.set_kind(kind);
    c.set_maxsize(maxsize);
    c.set_max_attempts(max_attempts);
    CreateQueue(c);
  }
  void CreateQueue(const v1::QueueConfig& c) {
    auto created = engine_->CreateQueue(c, false);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  FakeClock clock_;
  std::unique_ptr<TaskEngine> engine_;
};

}  // namespace taskq
