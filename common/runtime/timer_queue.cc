#include "common/runtime/timer_queue.h"

#include <chrono>

#include "absl/time/clock.h"

namespace taskq::rt {

MonoNanos MonotonicNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

MonoNanos MonotonicAfter(absl::Duration d, MonoNanos now) {
  if (d <= absl::ZeroDuration()) return now;
  int64_t ns = absl::ToInt64Nanoseconds(d);  // saturates at int64 max
  if (ns >= kMonoNever - now) return kMonoNever;
  return now + ns;
}

MonoNanos MonotonicDeadline(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return kMonoNever;
  MonoNanos now = MonotonicNow();
  return MonotonicAfter(deadline - absl::Now(), now);
}

bool TimerQueue::Insert(TimerNode* node) {
  node->seq = next_seq_++;
  heap_.push_back(Slot{node->when, node->seq, node});
  node->index = heap_.size() - 1;
  SiftUp(heap_.size() - 1);
  return node->index == 0;
}

bool TimerQueue::Remove(TimerNode* node) {
  if (!node->queued()) return false;
  RemoveAt(node->index);
  return true;
}

TimerNode* TimerQueue::PopExpired(MonoNanos now) {
  if (heap_.empty() || heap_.front().when > now) return nullptr;
  return Pop();
}

TimerNode* TimerQueue::Pop() {
  if (heap_.empty()) return nullptr;
  TimerNode* node = heap_.front().node;
  RemoveAt(0);
  return node;
}

void TimerQueue::RemoveAt(size_t i) {
  TimerNode* removed = heap_[i].node;
  Slot last = heap_.back();
  heap_.pop_back();
  removed->index = TimerNode::kNotQueued;
  if (i == heap_.size()) return;  // it was the last slot
  Place(i, last);
  // The moved slot may belong above or below i.
  if (i > 0 && Before(heap_[i], heap_[(i - 1) / 4])) {
    SiftUp(i);
  } else {
    SiftDown(i);
  }
}

void TimerQueue::SiftUp(size_t i) {
  Slot s = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 4;
    if (!Before(s, heap_[parent])) break;
    Place(i, heap_[parent]);
    i = parent;
  }
  Place(i, s);
}

void TimerQueue::SiftDown(size_t i) {
  Slot s = heap_[i];
  const size_t n = heap_.size();
  while (true) {
    size_t first = 4 * i + 1;
    if (first >= n) break;
    size_t best = first;
    size_t end = first + 4 < n ? first + 4 : n;
    for (size_t c = first + 1; c < end; ++c) {
      if (Before(heap_[c], heap_[best])) best = c;
    }
    if (!Before(heap_[best], s)) break;
    Place(i, heap_[best]);
    i = best;
  }
  Place(i, s);
}

}  // namespace taskq::rt
