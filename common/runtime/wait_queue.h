// Internal: the FIFO wait queue behind every async primitive (AsyncMutex,
// Semaphore, Event, Condition, Channel) and the exactly-once protocol
// between waking a parked coroutine and cancelling it.
//
// A waiting operation's awaiter embeds a Waiter (so it lives in the waiting
// coroutine's frame; no allocation per wait). The protocol:
//
//   await_suspend:  Prepare(h) → Arm the stop callback (outside the lock: it
//                   may run inline) → lock → if already cancelled, do not
//                   suspend; else retry the fast path; else PushBack.
//   waker:          lock → PopFront (state kWoken, hand over the permit /
//                   item / lock *to the waiter* while still locked) → unlock
//                   → Resume (post to the waiter's executor).
//   stop callback:  lock → kIdle: mark kCancelled (await_suspend sees it);
//                   kQueued: unlink, mark kCancelled → unlock → Resume;
//                   kWoken: do nothing (the wake won the race).
//
// Both the waker and the canceller change a waiter's state only under the
// owning primitive's mutex and only from kQueued, so exactly one of them
// resumes it, exactly once. Whatever a waker handed over belongs to the
// woken waiter; a cancelled waiter was never handed anything — so a permit
// or item can never vanish in the race, it goes to the next waiter instead.
//
// Thread-safety: a Waiter's queue fields and state are guarded by the owning
// primitive's mutex (`*mu`). They carry no ABSL_GUARDED_BY because the
// analysis cannot tie a waiter to the mutex of the primitive it is queued
// on; every access is in this file or in a primitive's locked section.
// handle/executor/mu are written before the waiter is published and read
// only by whoever resumes it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>

#include "common/runtime/executor.h"
#include "common/sync.h"

namespace taskq::rt::internal {

enum class WaitState : uint8_t {
  kIdle,       // not queued yet (in await_ready/await_suspend, or fast path)
  kQueued,     // parked in a WaiterQueue
  kWoken,      // removed by a waker: the operation succeeded (or saw Close)
  kCancelled,  // removed (or never queued) because the stop token fired
};

class WaiterQueue;

struct Waiter {
  std::coroutine_handle<> handle;
  Executor* executor = nullptr;
  Mutex* mu = nullptr;  // the owning primitive's mutex

  // Guarded by *mu (see the file comment).
  WaitState state = WaitState::kIdle;
  WaiterQueue* queue = nullptr;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;

  // Called in await_suspend before the waiter can be seen by anyone else.
  void Prepare(std::coroutine_handle<> h, Mutex* owner_mu) {
    handle = h;
    executor = CurrentExecutor();
    mu = owner_mu;
  }
  // Resumes the waiting coroutine on the executor it suspended on (inline if
  // it had none). Call without holding *mu.
  void Resume() const { ResumeOn(executor, handle); }
};

// Intrusive doubly linked FIFO of waiters; O(1) push, pop and unlink.
// Used only under the owning primitive's mutex.
class WaiterQueue {
 public:
  WaiterQueue() = default;
  WaiterQueue(const WaiterQueue&) = delete;
  WaiterQueue& operator=(const WaiterQueue&) = delete;

  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }

  void PushBack(Waiter* w) {
    w->state = WaitState::kQueued;
    w->queue = this;
    w->prev = tail_;
    w->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    ++size_;
  }

  // Unlinks the oldest waiter and marks it kWoken. Requires !empty().
  Waiter* PopFront() {
    Waiter* w = head_;
    Unlink(w);
    w->state = WaitState::kWoken;
    return w;
  }

  // Unlinks `w` (which must be queued here) and marks it kCancelled.
  void Cancel(Waiter* w) {
    Unlink(w);
    w->state = WaitState::kCancelled;
  }

 private:
  void Unlink(Waiter* w) {
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else {
      head_ = w->next;
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      tail_ = w->prev;
    }
    w->prev = w->next = nullptr;
    w->queue = nullptr;
    --size_;
  }

  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  size_t size_ = 0;
};

// Waiters taken off a queue under the lock, resumed after unlocking.
// Local to one waker; reuses the waiters' `next` links (a woken waiter is no
// longer on any queue and nobody else touches its links).
class WokenList {
 public:
  WokenList() = default;
  WokenList(const WokenList&) = delete;
  WokenList& operator=(const WokenList&) = delete;
  ~WokenList() { ResumeAll(); }

  void Add(Waiter* w) {
    w->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
  }
  // Takes every waiter off `q` (each marked kWoken), oldest first.
  void TakeAll(WaiterQueue& q) {
    while (!q.empty()) Add(q.PopFront());
  }
  // Resumes every waiter, oldest first. Call without holding the lock.
  void ResumeAll() {
    Waiter* w = head_;
    head_ = tail_ = nullptr;
    while (w != nullptr) {
      Waiter* next = w->next;  // read first: once resumed, w may be gone
      w->Resume();
      w = next;
    }
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

// Called by the stop callback: cancels `w` unless a waker got it first.
void CancelWaiter(Waiter* w);

// Cancels a Waiter when a std::stop_token fires. Lives beside the Waiter in
// the awaiter.
class CancelHook {
 public:
  // Registers the callback if the token can ever fire. Call WITHOUT holding
  // *w->mu: if stop was already requested the callback runs inline.
  void Arm(const std::stop_token& stop, Waiter* w) {
    if (stop.stop_possible()) callback_.emplace(stop, Canceller{w});
  }
  // Deregisters. Call WITHOUT holding *w->mu: if the callback is running on
  // another thread this waits for it to return, and it takes that lock.
  void Disarm() { callback_.reset(); }

 private:
  struct Canceller {
    Waiter* w;
    void operator()() const noexcept { CancelWaiter(w); }
  };
  std::optional<std::stop_callback<Canceller>> callback_;
};

}  // namespace taskq::rt::internal
