// taskq-runtime-bench: Google Benchmark micro-benchmarks of the coroutine
// runtime (common/runtime, taskq::rt) next to the same workloads hand-rolled
// with std::thread, std::mutex and std::condition_variable.
// bench/runtime.sh runs it together with bench/python/runtime_micro.py (the
// same workloads in asyncio and gevent) and prints the ratios; bench/README.md
// explains the numbers.
//
// Every benchmark does a fixed batch of operations per iteration (the "ops"
// counter), with a fixed iteration count and wall-clock time: threads are
// involved and the machine is small and shared, so an adaptive iteration
// count or CPU time would measure the wrong thing. ns/op = real_time / ops.
//
// Workloads (same meaning as in runtime_micro.py):
//   spawn_resume      spawn N coroutines that each yield once, wait for all;
//                     std: N jobs on a mutex+condvar thread pool, each job
//                     re-submitting itself once (its "yield"); also plain
//                     std::thread create+join.
//   channel_pingpong  two coroutines bounce a number through two 1-slot
//                     rt::Channel<int>; per round trip. std: two threads and
//                     two 1-slot mutex+condvar queues.
//   mutex_contended   4 coroutines x (lock rt::AsyncMutex, ++counter, unlock,
//                     yield) on a 2-thread scheduler; per acquisition. Also
//                     without the yield, and on 1 thread (where, as in
//                     Python, the lock is never held across a switch, so
//                     never contended). std: 4 threads x (lock std::mutex,
//                     ++counter, unlock).
//   timer_fire        N coroutines sleeping 0..10 ms (spread evenly) with
//                     rt::SleepFor, wait for all; per timer. std: the same N
//                     timers on one std::priority_queue timer thread (N
//                     threads would not scale to 100k). rt_callback: the
//                     same N as IoDriver::Timer callbacks, no coroutines.
//   timer_insert_cancel  insert N callback timers (1 h out, spread over
//                     100 ms) then cancel them all; per timer. std: a
//                     std::map (ordered, erasable) timer thread.
//
// The std versions use taskq::Mutex / taskq::CondVar (common/sync.h), which
// are std::mutex / std::condition_variable with thread-safety annotations and
// nothing else.
//
// Thread-safety: a benchmark program; each benchmark owns its scheduler and
// threads and joins them before it returns.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/async_mutex.h"
#include "common/runtime/channel.h"
#include "common/runtime/event.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/sleep.h"
#include "common/runtime/task.h"
#include "common/runtime/when_all.h"
#include "common/sync.h"

namespace taskq {
namespace {

// Operations per iteration. Keep equal to bench/python/runtime_micro.py.
constexpr int kSpawnOps = 100'000;
constexpr int kThreadOps = 1'000;  // std::thread create+join is ~100x dearer
constexpr int kThreadBatch = 100;  // threads alive at once
constexpr int kPingPongOps = 20'000;
constexpr int kMutexOps = 100'000;  // acquisitions, over all workers
constexpr int kMutexWorkers = 4;
constexpr int kTimerOps = 100'000;
constexpr int kIterations = 5;

// What one iteration did, for ns/op and items/s.
void SetOps(benchmark::State& state, int64_t ops) {
  state.counters["ops"] = static_cast<double>(ops);
  state.SetItemsProcessed(state.iterations() * ops);
}

// A benchmark that computes a wrong result must not report a time.
void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "runtime_bench: check failed: %s\n", what);
    std::abort();
  }
}

// 0 .. 9.99 ms in steps of 10 us: N timers spread evenly over 10 ms.
absl::Duration FireDelay(int i) { return absl::Microseconds((i % 1000) * 10); }
// 1 h plus a scattered 0 .. 100 ms, so inserts land all over the heap.
absl::Duration FarDelay(int i) {
  return absl::Hours(1) + absl::Microseconds((int64_t{i} * 7919) % 100'000);
}

// --- shared completion counters ----------------------------------------------

// Counts finished coroutines; the last one sets `zero`. Lives outside the
// coroutines it counts (a benchmark local), so a Set() still returning on
// one thread never races the destruction of the Event.
struct RtCountdown {
  std::atomic<int64_t> left{0};
  rt::Event zero;

  void Reset(int64_t n) {
    left.store(n, std::memory_order_relaxed);
    zero.Clear();
  }
  void Done() {
    if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) zero.Set();
  }
};

// The same for plain threads.
class StdCountdown {
 public:
  void Reset(int64_t n) {
    MutexLock lock(&mu_);
    left_.store(n, std::memory_order_relaxed);
    zero_ = false;
  }
  void Done() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    MutexLock lock(&mu_);
    zero_ = true;
    cv_.SignalAll();
  }
  void Wait() {
    MutexLock lock(&mu_);
    while (!zero_) cv_.Wait(&mu_);
  }
  static void DoneThunk(void* self) { static_cast<StdCountdown*>(self)->Done(); }

 private:
  std::atomic<int64_t> left_{0};
  Mutex mu_;
  CondVar cv_;
  bool zero_ ABSL_GUARDED_BY(mu_) = false;
};

// --- std building blocks: what one would hand-roll ---------------------------

// A fixed pool of std::threads taking std::function jobs from one
// mutex+condvar FIFO.
class StdThreadPool {
 public:
  explicit StdThreadPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~StdThreadPool() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    for (std::thread& t : threads_) t.join();
  }
  StdThreadPool(const StdThreadPool&) = delete;
  StdThreadPool& operator=(const StdThreadPool&) = delete;

  void Submit(std::function<void()> job) {
    {
      MutexLock lock(&mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.Signal();
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> job;
      {
        MutexLock lock(&mu_);
        while (jobs_.empty() && !stop_) cv_.Wait(&mu_);
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  Mutex mu_;
  CondVar cv_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// queue.Queue(maxsize) for threads: Put waits while full, Get while empty.
class StdBoundedQueue {
 public:
  explicit StdBoundedQueue(size_t capacity) : capacity_(capacity) {}

  void Put(int v) {
    MutexLock lock(&mu_);
    while (items_.size() >= capacity_) not_full_.Wait(&mu_);
    items_.push_back(v);
    not_empty_.Signal();
  }
  int Get() {
    MutexLock lock(&mu_);
    while (items_.empty()) not_empty_.Wait(&mu_);
    int v = items_.front();
    items_.pop_front();
    not_full_.Signal();
    return v;
  }

 private:
  const size_t capacity_;
  Mutex mu_;
  CondVar not_empty_;
  CondVar not_full_;
  std::deque<int> items_ ABSL_GUARDED_BY(mu_);
};

using SteadyClock = std::chrono::steady_clock;
using TimerFn = void (*)(void*);

struct StdTimerEntry {
  SteadyClock::time_point when;
  uint64_t seq;  // equal deadlines fire in insertion order
  TimerFn fn;
  void* arg;
};

// Timer storage for StdTimerThread: a binary heap (no cancel).
class HeapTimers {
 public:
  using Key = uint64_t;  // only the sequence number: a heap cannot erase
  Key Push(const StdTimerEntry& e) {
    heap_.push(e);
    return e.seq;
  }
  bool empty() const { return heap_.empty(); }
  SteadyClock::time_point TopWhen() const { return heap_.top().when; }
  StdTimerEntry Pop() {
    StdTimerEntry e = heap_.top();
    heap_.pop();
    return e;
  }

 private:
  struct Later {
    bool operator()(const StdTimerEntry& a, const StdTimerEntry& b) const {
      return a.when > b.when || (a.when == b.when && a.seq > b.seq);
    }
  };
  std::priority_queue<StdTimerEntry, std::vector<StdTimerEntry>, Later> heap_;
};

// Timer storage for StdTimerThread: an ordered map, so a timer can be
// cancelled by its key.
class MapTimers {
 public:
  using Key = std::pair<SteadyClock::time_point, uint64_t>;
  Key Push(const StdTimerEntry& e) {
    Key key{e.when, e.seq};
    map_.emplace(key, e);
    return key;
  }
  bool Erase(const Key& key) { return map_.erase(key) > 0; }
  bool empty() const { return map_.empty(); }
  SteadyClock::time_point TopWhen() const { return map_.begin()->first.first; }
  StdTimerEntry Pop() {
    StdTimerEntry e = map_.begin()->second;
    map_.erase(map_.begin());
    return e;
  }

 private:
  std::map<Key, StdTimerEntry> map_;
};

// One thread firing callbacks at deadlines: sleeps on a condition variable
// until the earliest deadline; Add wakes it when the new timer is earlier.
template <typename Timers>
class StdTimerThread {
 public:
  StdTimerThread() : thread_([this] { Loop(); }) {}
  ~StdTimerThread() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    thread_.join();
  }
  StdTimerThread(const StdTimerThread&) = delete;
  StdTimerThread& operator=(const StdTimerThread&) = delete;

  typename Timers::Key Add(SteadyClock::time_point when, TimerFn fn, void* arg) {
    MutexLock lock(&mu_);
    bool earliest = timers_.empty() || when < timers_.TopWhen();
    typename Timers::Key key = timers_.Push(StdTimerEntry{when, next_seq_++, fn, arg});
    if (earliest) cv_.Signal();
    return key;
  }
  // Only with MapTimers.
  bool Cancel(const typename Timers::Key& key) {
    MutexLock lock(&mu_);
    return timers_.Erase(key);
  }

 private:
  void Loop() {
    std::vector<StdTimerEntry> due;
    while (true) {
      {
        MutexLock lock(&mu_);
        while (!stop_) {
          if (timers_.empty()) {
            cv_.Wait(&mu_);
            continue;
          }
          SteadyClock::duration left = timers_.TopWhen() - SteadyClock::now();
          if (left <= SteadyClock::duration::zero()) break;
          cv_.WaitWithTimeout(&mu_, absl::FromChrono(left));
        }
        if (stop_) return;
        SteadyClock::time_point now = SteadyClock::now();
        while (!timers_.empty() && timers_.TopWhen() <= now) due.push_back(timers_.Pop());
      }
      for (const StdTimerEntry& e : due) e.fn(e.arg);  // outside the lock
      due.clear();
    }
  }

  Mutex mu_;
  CondVar cv_;
  Timers timers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the fields it reads
};

SteadyClock::time_point SteadyAfter(absl::Duration d) {
  return SteadyClock::now() + absl::ToChronoNanoseconds(d);
}

// --- spawn_resume -------------------------------------------------------------

rt::Task<void> YieldOnce(rt::Scheduler* sched, RtCountdown* done) {
  co_await sched->Yield();
  done->Done();
}

rt::Task<void> SpawnYieldJoin(rt::Scheduler* sched, int n, RtCountdown* done) {
  for (int i = 0; i < n; ++i) sched->Spawn(YieldOnce(sched, done));
  Check((co_await done->zero.Wait()).ok(), "spawn_resume: wait");
}

void BM_SpawnResumeRt(benchmark::State& state) {
  rt::Scheduler sched({.threads = static_cast<int>(state.range(0)), .name = "bench"});
  RtCountdown done;
  for (auto _ : state) {
    done.Reset(kSpawnOps);
    sched.BlockOn(SpawnYieldJoin(&sched, kSpawnOps, &done));
  }
  SetOps(state, kSpawnOps);
}

rt::Task<void> YieldOnceAlone(rt::Scheduler* sched) { co_await sched->Yield(); }

// asyncio.gather / gevent.joinall: the structured form.
rt::Task<void> GatherYield(rt::Scheduler* sched, int n) {
  std::vector<rt::Task<void>> tasks;
  tasks.reserve(n);
  for (int i = 0; i < n; ++i) tasks.push_back(YieldOnceAlone(sched));
  co_await rt::WhenAll(std::move(tasks));
}

void BM_SpawnResumeRtWhenAll(benchmark::State& state) {
  rt::Scheduler sched({.threads = static_cast<int>(state.range(0)), .name = "bench"});
  for (auto _ : state) sched.BlockOn(GatherYield(&sched, kSpawnOps));
  SetOps(state, kSpawnOps);
}

// The job's "yield": go to the back of the queue once, then count.
void YieldOnceJob(StdThreadPool* pool, StdCountdown* done, bool yielded) {
  if (!yielded) {
    pool->Submit([pool, done] { YieldOnceJob(pool, done, true); });
    return;
  }
  done->Done();
}

void BM_SpawnResumeStdPool(benchmark::State& state) {
  StdThreadPool pool(static_cast<int>(state.range(0)));
  StdCountdown done;
  for (auto _ : state) {
    done.Reset(kSpawnOps);
    for (int i = 0; i < kSpawnOps; ++i) {
      pool.Submit([&pool, &done] { YieldOnceJob(&pool, &done, false); });
    }
    done.Wait();
  }
  SetOps(state, kSpawnOps);
}

void BM_SpawnStdThread(benchmark::State& state) {
  std::atomic<int64_t> ran{0};
  std::vector<std::thread> batch;
  batch.reserve(kThreadBatch);
  for (auto _ : state) {
    for (int b = 0; b < kThreadOps / kThreadBatch; ++b) {
      for (int i = 0; i < kThreadBatch; ++i) {
        batch.emplace_back([&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
      }
      for (std::thread& t : batch) t.join();
      batch.clear();
    }
  }
  Check(ran.load() == state.iterations() * kThreadOps, "std::thread: every thread ran");
  SetOps(state, kThreadOps);
}

// --- channel_pingpong -----------------------------------------------------------

rt::Task<void> Pinger(rt::Channel<int>* ping, rt::Channel<int>* pong, int n) {
  for (int i = 0; i < n; ++i) {
    Check((co_await ping->Send(i)).ok(), "pingpong: send ping");
    absl::StatusOr<int> back = co_await pong->Recv();
    Check(back.ok() && *back == i, "pingpong: receive pong");
  }
}

rt::Task<void> Ponger(rt::Channel<int>* ping, rt::Channel<int>* pong, int n) {
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<int> v = co_await ping->Recv();
    Check(v.ok(), "pingpong: receive ping");
    Check((co_await pong->Send(*v)).ok(), "pingpong: send pong");
  }
}

rt::Task<void> PingPong(int n) {
  rt::Channel<int> ping(1);
  rt::Channel<int> pong(1);
  co_await rt::WhenAll(Pinger(&ping, &pong, n), Ponger(&ping, &pong, n));
}

void BM_PingPongRt(benchmark::State& state) {
  rt::Scheduler sched({.threads = static_cast<int>(state.range(0)), .name = "bench"});
  for (auto _ : state) sched.BlockOn(PingPong(kPingPongOps));
  SetOps(state, kPingPongOps);
}

void BM_PingPongStd(benchmark::State& state) {
  StdBoundedQueue ping(1);
  StdBoundedQueue pong(1);
  std::thread ponger([&ping, &pong] {
    while (true) {
      int v = ping.Get();
      if (v < 0) return;
      pong.Put(v);
    }
  });
  for (auto _ : state) {
    for (int i = 0; i < kPingPongOps; ++i) {
      ping.Put(i);
      Check(pong.Get() == i, "std pingpong: pong");
    }
  }
  ping.Put(-1);
  ponger.join();
  SetOps(state, kPingPongOps);
}

// --- mutex_contended --------------------------------------------------------------

rt::Task<void> MutexWorker(rt::Scheduler* sched, rt::AsyncMutex* mu, int64_t* counter, int n,
                           bool yield) {
  for (int i = 0; i < n; ++i) {
    Check((co_await mu->Lock()).ok(), "mutex: lock");
    ++*counter;
    mu->Unlock();
    if (yield) co_await sched->Yield();
  }
}

rt::Task<void> MutexContend(rt::Scheduler* sched, rt::AsyncMutex* mu, int64_t* counter,
                            bool yield) {
  std::vector<rt::Task<void>> workers;
  for (int w = 0; w < kMutexWorkers; ++w) {
    workers.push_back(MutexWorker(sched, mu, counter, kMutexOps / kMutexWorkers, yield));
  }
  co_await rt::WhenAll(std::move(workers));
}

// range(0): scheduler threads; range(1): 1 = yield after each release (as
// the Python versions do), 0 = not.
void BM_MutexRt(benchmark::State& state) {
  const bool yield = state.range(1) != 0;
  rt::Scheduler sched({.threads = static_cast<int>(state.range(0)), .name = "bench"});
  rt::AsyncMutex mu;
  int64_t counter = 0;  // guarded by `mu` (an AsyncMutex: no annotation)
  for (auto _ : state) sched.BlockOn(MutexContend(&sched, &mu, &counter, yield));
  Check(counter == state.iterations() * kMutexOps, "mutex: counter");
  SetOps(state, kMutexOps);
}

struct StdCounter {
  Mutex mu;
  int64_t value ABSL_GUARDED_BY(mu) = 0;
};

void BM_MutexStd(benchmark::State& state) {
  StdCounter counter;
  std::vector<std::thread> workers;
  for (auto _ : state) {
    for (int w = 0; w < kMutexWorkers; ++w) {
      workers.emplace_back([&counter] {
        for (int i = 0; i < kMutexOps / kMutexWorkers; ++i) {
          MutexLock lock(&counter.mu);
          ++counter.value;
        }
      });
    }
    for (std::thread& t : workers) t.join();
    workers.clear();
  }
  MutexLock lock(&counter.mu);
  Check(counter.value == state.iterations() * kMutexOps, "std mutex: counter");
  SetOps(state, kMutexOps);
}

// --- timer_fire -------------------------------------------------------------------

rt::Task<void> SleepThenCount(absl::Duration d, RtCountdown* done) {
  Check((co_await rt::SleepFor(d)).ok(), "timer_fire: sleep");
  done->Done();
}

rt::Task<void> SpawnSleepers(rt::Scheduler* sched, int n, RtCountdown* done) {
  for (int i = 0; i < n; ++i) sched->Spawn(SleepThenCount(FireDelay(i), done));
  Check((co_await done->zero.Wait()).ok(), "timer_fire: wait");
}

void BM_TimerFireRt(benchmark::State& state) {
  rt::Scheduler sched({.threads = 2, .name = "bench"});
  RtCountdown done;
  for (auto _ : state) {
    done.Reset(kTimerOps);
    sched.BlockOn(SpawnSleepers(&sched, kTimerOps, &done));
  }
  SetOps(state, kTimerOps);
}

// The timer machinery alone, like the std version: IoDriver::Timer callbacks
// (run on the driver thread), no coroutine per timer.
void BM_TimerFireRtCallback(benchmark::State& state) {
  rt::IoDriver io({.name = "bench-io"});
  std::vector<std::optional<rt::IoDriver::Timer>> timers(kTimerOps);
  StdCountdown done;
  for (auto _ : state) {
    done.Reset(kTimerOps);
    for (int i = 0; i < kTimerOps; ++i) {
      timers[i].emplace(io, FireDelay(i), [&done](absl::Status s) {
        Check(s.ok(), "rt callback timer: status");
        done.Done();
      });
    }
    done.Wait();
    for (std::optional<rt::IoDriver::Timer>& t : timers) t.reset();
  }
  SetOps(state, kTimerOps);
}

void BM_TimerFireStd(benchmark::State& state) {
  StdTimerThread<HeapTimers> timers;
  StdCountdown done;
  for (auto _ : state) {
    done.Reset(kTimerOps);
    for (int i = 0; i < kTimerOps; ++i) {
      timers.Add(SteadyAfter(FireDelay(i)), &StdCountdown::DoneThunk, &done);
    }
    done.Wait();
  }
  SetOps(state, kTimerOps);
}

// --- timer_insert_cancel -----------------------------------------------------------

void BM_TimerInsertCancelRt(benchmark::State& state) {
  rt::IoDriver io({.name = "bench-io"});
  std::vector<std::optional<rt::IoDriver::Timer>> timers(kTimerOps);
  for (auto _ : state) {
    for (int i = 0; i < kTimerOps; ++i) {
      timers[i].emplace(io, FarDelay(i), [](absl::Status) { Check(false, "timer fired"); });
    }
    for (int i = 0; i < kTimerOps; ++i) {
      Check(timers[i]->Cancel(), "rt timer: cancel");
      timers[i].reset();
    }
  }
  Check(io.pending_timers() == 0, "rt timer: queue empty");
  SetOps(state, kTimerOps);
}

void NeverFires(void*) { Check(false, "std timer fired"); }

void BM_TimerInsertCancelStd(benchmark::State& state) {
  StdTimerThread<MapTimers> timers;
  std::vector<MapTimers::Key> keys(kTimerOps);
  for (auto _ : state) {
    for (int i = 0; i < kTimerOps; ++i) {
      keys[i] = timers.Add(SteadyAfter(FarDelay(i)), &NeverFires, nullptr);
    }
    for (int i = 0; i < kTimerOps; ++i) Check(timers.Cancel(keys[i]), "std timer: cancel");
  }
  SetOps(state, kTimerOps);
}

// Names are "<workload>/<impl>[/<arg>]"; bench/runtime.sh matches on them.
#define TASKQ_RUNTIME_BENCH(fn, name) \
  BENCHMARK(fn)->Name(name)->Iterations(kIterations)->UseRealTime()->Unit(benchmark::kMillisecond)

TASKQ_RUNTIME_BENCH(BM_SpawnResumeRt, "spawn_resume/rt")->ArgName("threads")->Arg(1)->Arg(2);
TASKQ_RUNTIME_BENCH(BM_SpawnResumeRtWhenAll, "spawn_resume/rt_whenall")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2);
TASKQ_RUNTIME_BENCH(BM_SpawnResumeStdPool, "spawn_resume/std_pool")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2);
TASKQ_RUNTIME_BENCH(BM_SpawnStdThread, "spawn_resume/std_thread");
TASKQ_RUNTIME_BENCH(BM_PingPongRt, "channel_pingpong/rt")->ArgName("threads")->Arg(1)->Arg(2);
TASKQ_RUNTIME_BENCH(BM_PingPongStd, "channel_pingpong/std");
TASKQ_RUNTIME_BENCH(BM_MutexRt, "mutex_contended/rt")
    ->ArgNames({"threads", "yield"})
    ->Args({2, 1})
    ->Args({2, 0})
    ->Args({1, 1});
TASKQ_RUNTIME_BENCH(BM_MutexStd, "mutex_contended/std");
TASKQ_RUNTIME_BENCH(BM_TimerFireRt, "timer_fire/rt");
TASKQ_RUNTIME_BENCH(BM_TimerFireRtCallback, "timer_fire/rt_callback");
TASKQ_RUNTIME_BENCH(BM_TimerFireStd, "timer_fire/std");
TASKQ_RUNTIME_BENCH(BM_TimerInsertCancelRt, "timer_insert_cancel/rt");
TASKQ_RUNTIME_BENCH(BM_TimerInsertCancelStd, "timer_insert_cancel/std");

}  // namespace
}  // namespace taskq

BENCHMARK_MAIN();
