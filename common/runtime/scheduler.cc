#include "common/runtime/scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/runtime/sanitizers.h"

namespace taskq::rt {

// One pool thread's state. `queue` is shared with thieves (see run_queue.h);
// the rest is touched only by the owning thread.
struct Scheduler::Worker {
  internal::RunQueue queue;
  size_t index = 0;
  uint32_t tick = 0;       // resumes so far: every 61st looks at the shared queue first
  uint32_t shared_batch_end = 0;  // ring position past the last batch taken from the shared queue
  bool searching = false;  // counted in searching_
};

namespace {
thread_local Scheduler* current_scheduler = nullptr;
thread_local void* current_worker = nullptr;  // a Scheduler::Worker of current_scheduler

// How often a thread takes from the shared queue before its own ring
// (Go uses 61 too: a prime, so it does not beat with other periods).
constexpr uint32_t kSharedQueueInterval = 61;
// Rounds of looking everywhere before a thread with nothing to do parks.
constexpr int kSearchRounds = 32;

// Orders this thread's earlier stores before its later loads (the StoreLoad
// barrier of the wake-up protocol, see Notify). ThreadSanitizer does not
// model fences, so under TSan every caller does a seq_cst read-modify-write
// of one shared atomic instead: the later of two such RMWs synchronises with
// the earlier, which gives the same guarantee (at the price of a shared
// cache line, acceptable in a sanitizer build).
#ifdef TASKQ_TSAN
std::atomic<int> tsan_barrier{0};
void StoreLoadBarrier() { tsan_barrier.fetch_add(1, std::memory_order_seq_cst); }
#else
void StoreLoadBarrier() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#endif

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
}  // namespace

namespace internal {

void ReportSpawnedError(const char* what, const absl::Status& status) {
  LogError("%s failed: %s", what, status.ToString());
}

void ReportSpawnedException(const char* what, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    LogError("%s threw: %s", what, ex.what());
  } catch (...) {
    LogError("%s threw a non-standard exception", what);
  }
}

}  // namespace internal

Scheduler::Scheduler(SchedulerOptions options)
    : name_(std::move(options.name)),
      io_(std::make_unique<IoDriver>(IoDriverOptions{.name = name_ + "-io", .fallback = this})) {
  size_t n = options.threads > 0 ? static_cast<size_t>(options.threads)
                                 : std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>());
    workers_.back()->index = i;
  }
  threads_.reserve(n);
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this, i] { Loop(workers_[i].get()); });
}

Scheduler::~Scheduler() { Shutdown(); }

Scheduler* Scheduler::Current() { return current_scheduler; }

void Scheduler::Post(std::coroutine_handle<> h) {
  if (current_scheduler == this) {
    PostLocal(static_cast<Worker*>(current_worker), h);
  } else {
    PostShared(h);
  }
}

void Scheduler::PostLocal(Worker* w, std::coroutine_handle<> h) {
  uint32_t before = w->queue.Push(h);
  if (before != internal::RunQueue::kFull) {
    // An empty ring: this thread runs `h` as soon as the current coroutine
    // suspends, so waking another thread would only cost a futex call.
    // Otherwise wake one if some are parked and none searches. Without the
    // barrier of Notify this check can miss a thread that is just parking;
    // that costs parallelism, never the handle (this thread runs it).
    if (before > 0 && sleepers_.load(std::memory_order_relaxed) > 0 &&
        searching_.load(std::memory_order_relaxed) == 0) {
      Notify();
    }
    return;
  }
  // Full: the older half and `h` go to the shared queue in one lock.
  std::coroutine_handle<> batch[internal::RunQueue::kCapacity / 2 + 1];
  size_t n = w->queue.TakeHalf(batch);
  batch[n++] = h;
  PostSharedBatch(batch, n);
}

void Scheduler::PostShared(std::coroutine_handle<> h) { PostSharedBatch(&h, 1); }

void Scheduler::PostSharedBatch(const std::coroutine_handle<>* hs, size_t n) {
  {
    MutexLock lock(&mu_);
    if (stopped_) {
      LogError("scheduler %s: resume posted after shutdown; dropped", name_);
      return;
    }
    shared_.insert(shared_.end(), hs, hs + n);
    shared_size_.store(shared_.size(), std::memory_order_relaxed);
    // Under the lock: once unlocked, a pool thread may take the handle, run
    // it to the end and let its owner destroy this scheduler (BlockOn's
    // caller), so a poster from outside the pool must not touch `this` after
    // unlocking.
    Notify();
  }
}

std::coroutine_handle<> Scheduler::TakeShared(Worker* w, size_t max) {
  if (shared_size_.load(std::memory_order_relaxed) == 0) return nullptr;
  MutexLock lock(&mu_);
  if (shared_.empty()) return nullptr;
  // A fair share for this thread, so the others find some too.
  size_t n = std::min({max, shared_.size(), shared_.size() / workers_.size() + 1,
                       size_t{internal::RunQueue::kCapacity / 2}});
  std::coroutine_handle<> first = shared_.front();
  shared_.pop_front();
  for (size_t i = 1; i < n; ++i) {
    if (w->queue.Push(shared_.front()) == internal::RunQueue::kFull) break;
    shared_.pop_front();
  }
  shared_size_.store(shared_.size(), std::memory_order_relaxed);
  w->shared_batch_end = w->queue.EndPosition();
  return first;
}

std::coroutine_handle<> Scheduler::FindWork(Worker* w) {
  // Not while the ring still holds a batch from the shared queue: the next
  // shared handle would overtake them (posts from one outside thread run in
  // order on a one-thread scheduler, e.g. timers firing).
  if (++w->tick % kSharedQueueInterval == 0 && w->queue.Consumed(w->shared_batch_end)) {
    if (std::coroutine_handle<> h = TakeShared(w, 1)) return h;
  }
  if (std::coroutine_handle<> h = w->queue.Pop()) return h;
  if (std::coroutine_handle<> h = TakeShared(w, SIZE_MAX)) return h;
  if (workers_.size() == 1) return nullptr;
  // Search: at most half of the busy threads at a time (Go's rule), so
  // idle threads do not all spin against one busy ring.
  if (!w->searching) {
    int busy = static_cast<int>(workers_.size()) - sleepers_.load(std::memory_order_relaxed);
    if (2 * searching_.load(std::memory_order_relaxed) >= busy) return nullptr;
    w->searching = true;
    searching_.fetch_add(1, std::memory_order_seq_cst);
  }
  for (int round = 0; round < kSearchRounds; ++round) {
    if (std::coroutine_handle<> h = StealOrTakeShared(w)) return h;
    for (int i = 0; i < 16; ++i) CpuRelax();
  }
  return nullptr;
}

std::coroutine_handle<> Scheduler::StealOrTakeShared(Worker* w) {
  size_t n = workers_.size();
  for (size_t i = 1; i < n; ++i) {
    Worker* victim = workers_[(w->index + i) % n].get();
    if (victim->queue.SizeHint() == 0) continue;
    if (std::coroutine_handle<> h = w->queue.StealHalfInto(victim->queue)) return h;
  }
  return TakeShared(w, SIZE_MAX);
}

bool Scheduler::AnyWorkVisible() const {
  if (shared_size_.load(std::memory_order_seq_cst) > 0) return true;
  for (const std::unique_ptr<Worker>& w : workers_) {
    if (w->queue.SizeHint() > 0) return true;
  }
  return false;
}

void Scheduler::StopSearching(Worker* w) {
  w->searching = false;
  // The last searcher found work: there may be more (posts skipped waking
  // anyone while it searched), so hand the search to a parked thread.
  if (searching_.fetch_sub(1, std::memory_order_seq_cst) == 1) Notify();
}

// The poster's half of the lost-wake-up protocol: its handle is queued
// (a store) before this barrier, then it reads sleepers_/searching_. A
// parking thread updates those, passes the same barrier, then looks at every
// queue. With seq_cst fences on both sides at least one of them sees the
// other: the poster wakes the parker, or the parker finds the handle.
void Scheduler::Notify() {
  StoreLoadBarrier();
  if (sleepers_.load(std::memory_order_relaxed) == 0) return;
  if (searching_.load(std::memory_order_relaxed) != 0) return;  // it will find the work
  MutexLock lock(&park_mu_);
  if (parked_ > wake_tokens_ && searching_.load(std::memory_order_relaxed) == 0) {
    ++wake_tokens_;
    // The woken thread starts out searching; counting it now keeps the
    // posts until it runs from waking more threads.
    searching_.fetch_add(1, std::memory_order_seq_cst);
    park_cv_.Signal();
  }
}

bool Scheduler::Park(Worker* w) {
  MutexLock lock(&park_mu_);
  if (w->searching) {
    w->searching = false;
    searching_.fetch_sub(1, std::memory_order_seq_cst);
  }
  ++parked_;
  sleepers_.store(parked_, std::memory_order_seq_cst);
  StoreLoadBarrier();
  bool exit = false;
  if (!AnyWorkVisible()) {
    if (stopping_.load(std::memory_order_acquire)) {
      exit = true;
    } else {
      while (wake_tokens_ == 0 && !stopping_.load(std::memory_order_acquire)) {
        park_cv_.Wait(&park_mu_);
      }
      if (wake_tokens_ > 0) {
        --wake_tokens_;
        w->searching = true;  // Notify counted us in searching_
      }
    }
  }
  --parked_;
  sleepers_.store(parked_, std::memory_order_seq_cst);
  return !exit;
}

void Scheduler::Loop(Worker* w) {
  std::string thread_name = absl::StrCat(name_, "-", w->index).substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  current_scheduler = this;
  current_worker = w;
  internal::SetCurrentExecutor(this);
  while (true) {
    std::coroutine_handle<> h = FindWork(w);
    if (!h) {
      if (!Park(w)) break;
      continue;
    }
    if (w->searching) StopSearching(w);
    h.resume();
  }
  if (w->searching) StopSearching(w);
  internal::SetCurrentExecutor(nullptr);
  current_worker = nullptr;
  current_scheduler = nullptr;
}

void Scheduler::Shutdown() {
  MutexLock join_lock(&join_mu_);
  if (joined_) return;
  CheckNotOnPool();
  // First the reactor: its waiters resume (cancelled) on the pool, which is
  // still running and drains them below.
  io_->Stop();
  stopping_.store(true, std::memory_order_release);
  {
    MutexLock lock(&park_mu_);
    park_cv_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  joined_ = true;
  size_t stranded;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    stranded = shared_.size();
    shared_.clear();
    shared_size_.store(0, std::memory_order_relaxed);
  }
  if (stranded > 0) {
    LogWarning("scheduler %s: %d resume(s) posted while its last thread exited; dropped",
               name_, static_cast<int>(stranded));
  }
  if (size_t left = live_spawned(); left > 0) {
    LogWarning("scheduler %s stopped with %d spawned task(s) still suspended", name_,
               static_cast<int>(left));
  }
}

void Scheduler::CheckNotOnPool() const {
  if (current_scheduler == this) {
    LogError("scheduler %s: BlockOn/Shutdown called from its own thread (would deadlock)",
             name_);
    std::abort();
  }
}

}  // namespace taskq::rt
