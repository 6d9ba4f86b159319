// Internal: RunQueue, one scheduler thread's queue of coroutines ready to
// run — a bounded FIFO ring that its owner pushes to and pops from without
// a lock, and that other threads of the pool steal half of when they run
// dry (the design of Go's and tokio's per-processor run queues).
//
//   owner:   Push (kFull when full: the caller moves half out with
//            TakeHalf and sends it to the shared queue), Pop.
//   thieves: StealHalfInto(own queue), from any thread.
//   anyone:  SizeHint, a snapshot for "is there work?" checks.
//
// Order: the owner pops in push order. A thief takes the oldest half.
//
// Thread-safety: Push, Pop, TakeHalf and StealHalfInto(this as the
// destination) only on the owning thread; StealHalfInto with this queue as
// the victim and SizeHint from any thread. The head is advanced by a CAS
// that any consumer (owner or thief) may win; only the owner moves the tail.
// Slots are atomics because a thief may read a slot the owner is refilling
// (it then fails its CAS and discards what it read). A handle pushed here
// happens-before its pop or theft (release store of the tail, acquire loads).
#pragma once

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>

namespace taskq::rt::internal {

class RunQueue {
 public:
  static constexpr uint32_t kCapacity = 256;

  RunQueue() = default;
  RunQueue(const RunQueue&) = delete;
  RunQueue& operator=(const RunQueue&) = delete;

  static constexpr uint32_t kFull = ~uint32_t{0};

  // Owner: appends `h` and returns how many handles were queued before it;
  // kFull (nothing changed) if the queue is full.
  uint32_t Push(std::coroutine_handle<> h) {
    uint32_t head = head_.load(std::memory_order_acquire);
    uint32_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head >= kCapacity) return kFull;
    slots_[tail % kCapacity].store(h.address(), std::memory_order_relaxed);
    tail_.store(tail + 1, std::memory_order_release);
    return tail - head;
  }

  // Owner: removes and returns the oldest handle, or a null handle.
  std::coroutine_handle<> Pop() {
    uint32_t tail = tail_.load(std::memory_order_relaxed);
    uint32_t head = head_.load(std::memory_order_acquire);
    while (head != tail) {
      void* h = slots_[head % kCapacity].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(head, head + 1, std::memory_order_release,
                                      std::memory_order_acquire)) {
        return std::coroutine_handle<>::from_address(h);
      }
    }
    return nullptr;
  }

  // Owner: removes the oldest half (at least one if not empty) into `out`
  // (room for kCapacity / 2), oldest first; returns how many. Used when the
  // queue is full, to move that half to the shared queue.
  size_t TakeHalf(std::coroutine_handle<>* out) {
    uint32_t tail = tail_.load(std::memory_order_relaxed);
    while (true) {
      uint32_t head = head_.load(std::memory_order_acquire);
      uint32_t n = tail - head;
      n -= n / 2;
      if (n == 0) return 0;
      for (uint32_t i = 0; i < n; ++i) {
        out[i] = std::coroutine_handle<>::from_address(
            slots_[(head + i) % kCapacity].load(std::memory_order_relaxed));
      }
      if (head_.compare_exchange_strong(head, head + n, std::memory_order_release,
                                        std::memory_order_relaxed)) {
        return n;
      }
    }
  }

  // Called by the owner of `this` (which must be empty): moves the oldest
  // half of `victim`'s handles here and returns one of them to run now, or
  // a null handle if `victim` was empty.
  std::coroutine_handle<> StealHalfInto(RunQueue& victim) {
    uint32_t tail = tail_.load(std::memory_order_relaxed);
    uint32_t n;
    while (true) {
      uint32_t head = victim.head_.load(std::memory_order_acquire);
      uint32_t vtail = victim.tail_.load(std::memory_order_acquire);
      n = vtail - head;
      n -= n / 2;
      if (n == 0) return nullptr;
      if (n > kCapacity / 2) continue;  // head and tail read at different times
      for (uint32_t i = 0; i < n; ++i) {
        void* h = victim.slots_[(head + i) % kCapacity].load(std::memory_order_relaxed);
        slots_[(tail + i) % kCapacity].store(h, std::memory_order_relaxed);
      }
      if (victim.head_.compare_exchange_strong(head, head + n, std::memory_order_release,
                                               std::memory_order_relaxed)) {
        break;
      }
    }
    // The last one stolen runs now; the rest become visible in our queue.
    --n;
    void* run = slots_[(tail + n) % kCapacity].load(std::memory_order_relaxed);
    if (n > 0) tail_.store(tail + n, std::memory_order_release);
    return std::coroutine_handle<>::from_address(run);
  }

  // Owner: a position just past the newest handle pushed so far.
  uint32_t EndPosition() const { return tail_.load(std::memory_order_relaxed); }
  // Owner: whether every handle before `position` (an EndPosition) has been
  // popped or stolen.
  bool Consumed(uint32_t position) const {
    return static_cast<int32_t>(head_.load(std::memory_order_acquire) - position) >= 0;
  }

  // Any thread: how many handles are queued (a snapshot). Head is read
  // first: both only grow, so the difference is never negative.
  uint32_t SizeHint() const {
    uint32_t head = head_.load(std::memory_order_acquire);
    uint32_t tail = tail_.load(std::memory_order_acquire);
    return tail - head > kCapacity ? kCapacity : tail - head;
  }

 private:
  alignas(64) std::atomic<uint32_t> head_{0};  // next to pop; consumers CAS it
  alignas(64) std::atomic<uint32_t> tail_{0};  // next free slot; owner only
  alignas(64) std::array<std::atomic<void*>, kCapacity> slots_{};
};

}  // namespace taskq::rt::internal
