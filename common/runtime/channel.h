// Channel<T>: a bounded multi-producer multi-consumer queue for coroutines
// with close — the seeds' queue.Queue(maxsize) (asyncio.Queue), plus Go's
// close so consumers know when the stream ends.
//
//   rt::Channel<int> ch(100);
//   // producers:
//   absl::Status s = co_await ch.Send(x, stop);
//   ch.Close();                      // once every producer is done
//   // consumers:
//   while (true) {
//     absl::StatusOr<int> v = co_await ch.Recv(stop);
//     if (!v.ok()) break;            // OUT_OF_RANGE: closed and drained
//     Use(*v);
//   }
//
// - Send waits while `capacity` items are buffered (queue.put); Recv waits
//   while none is (queue.get). Waiting suspends the coroutine, never the
//   thread; the completing side posts the waiter to the executor it was
//   waiting on (inline if it had none).
// - capacity 0 is a rendezvous: Send completes only when a receiver has
//   taken the item.
// - Items are received in the order they were sent. Waiting senders and
//   receivers are served FIFO (oldest first); a new Send/TrySend never
//   overtakes a waiting sender, nor a new Recv/TryRecv a waiting receiver.
// - TrySend / TryRecv never wait (put_nowait / get_nowait): TrySend fails
//   RESOURCE_EXHAUSTED "channel full", TryRecv UNAVAILABLE "channel empty".
//   TrySend moves from its argument only when it returns OK.
// - Close(): idempotent. Later (and waiting) Sends fail FAILED_PRECONDITION
//   "channel closed" — a waiting sender's item is not delivered. Receivers
//   first drain what is buffered, then get OUT_OF_RANGE "channel closed".
// - Cancellation: Send(x, stop) / Recv(stop) complete with CANCELLED
//   "cancelled" if `stop` fires first (or had fired). An item is never lost
//   in that race: an item handed to a receiver that is being cancelled at
//   the same moment is either returned by that Recv (OK) or goes to the
//   next receiver / stays buffered; a cancelled Send did not deliver.
// - size() counts buffered items (not waiting senders' items). T's move
//   constructor must not throw.
//
// Thread-safety: every method is safe from any thread, pool or plain
// (TrySend/TryRecv/Close from a std::thread). The channel must outlive every
// Send/Recv waiting on it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <deque>
#include <optional>
#include <stop_token>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/log.h"
#include "common/runtime/cancel.h"
#include "common/runtime/wait_queue.h"
#include "common/sync.h"

namespace taskq::rt {

template <typename T>
class Channel {
 public:
  class SendOp;
  class RecvOp;

  explicit Channel(size_t capacity) : capacity_(capacity) {}
  ~Channel() {
    MutexLock lock(&mu_);
    if (!senders_.empty() || !receivers_.empty()) {
      LogError("Channel destroyed with %d sender(s) and %d receiver(s) still waiting",
               static_cast<int>(senders_.size()), static_cast<int>(receivers_.size()));
    }
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // `co_await Send(x, stop)`: OK once `x` is buffered or taken by a receiver;
  // FAILED_PRECONDITION if the channel is (or gets) closed; CANCELLED.
  SendOp Send(T value, std::stop_token stop = {}) {
    return SendOp(this, std::move(value), std::move(stop));
  }
  // `co_await Recv(stop)`: the oldest item; OUT_OF_RANGE once closed and
  // drained; CANCELLED.
  RecvOp Recv(std::stop_token stop = {}) { return RecvOp(this, std::move(stop)); }

  // Never waits. OK (moved from `value`), RESOURCE_EXHAUSTED "channel full"
  // (`value` untouched) or FAILED_PRECONDITION "channel closed".
  absl::Status TrySend(T&& value) {
    internal::Waiter* wake = nullptr;
    Outcome outcome;
    {
      MutexLock lock(&mu_);
      outcome = SendLocked(value, &wake);
    }
    if (wake != nullptr) wake->Resume();
    switch (outcome) {
      case Outcome::kDone:
        return absl::OkStatus();
      case Outcome::kClosed:
        return ClosedForSend();
      case Outcome::kWouldBlock:
        break;
    }
    return absl::ResourceExhaustedError("channel full");
  }
  absl::Status TrySend(const T& value) {
    T copy(value);
    return TrySend(std::move(copy));
  }
  // Never waits. The oldest item, UNAVAILABLE "channel empty", or
  // OUT_OF_RANGE "channel closed" once closed and drained.
  absl::StatusOr<T> TryRecv() {
    internal::Waiter* wake = nullptr;
    std::optional<T> item;
    Outcome outcome;
    {
      MutexLock lock(&mu_);
      outcome = RecvLocked(&item, &wake);
    }
    if (wake != nullptr) wake->Resume();
    switch (outcome) {
      case Outcome::kDone:
        return std::move(*item);
      case Outcome::kClosed:
        return ClosedForRecv();
      case Outcome::kWouldBlock:
        break;
    }
    return absl::UnavailableError("channel empty");
  }

  // Closes the channel: wakes every waiting sender (FAILED_PRECONDITION)
  // and receiver (OUT_OF_RANGE). Buffered items stay receivable.
  void Close() {
    internal::WokenList woken;
    {
      MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      // Receivers wait only while nothing is buffered, so they are done.
      while (!receivers_.empty()) {
        auto* r = static_cast<RecvWaiter*>(receivers_.PopFront());
        r->result = ClosedForRecv();
        woken.Add(r);
      }
      while (!senders_.empty()) {
        auto* s = static_cast<SendWaiter*>(senders_.PopFront());
        s->result = ClosedForSend();
        woken.Add(s);
      }
    }
    woken.ResumeAll();
  }

  bool closed() const {
    MutexLock lock(&mu_);
    return closed_;
  }
  // Buffered items.
  size_t size() const {
    MutexLock lock(&mu_);
    return buffer_.size();
  }
  size_t capacity() const { return capacity_; }
  size_t waiting_senders() const {
    MutexLock lock(&mu_);
    return senders_.size();
  }
  size_t waiting_receivers() const {
    MutexLock lock(&mu_);
    return receivers_.size();
  }

 private:
  enum class Outcome { kDone, kWouldBlock, kClosed };

  struct SendWaiter : internal::Waiter {
    T* value = nullptr;  // the item, in the SendOp
    absl::Status result;
  };
  struct RecvWaiter : internal::Waiter {
    std::optional<T> item;
    absl::Status result;
  };

  static absl::Status ClosedForSend() {
    return absl::FailedPreconditionError("channel closed");
  }
  static absl::Status ClosedForRecv() { return absl::OutOfRangeError("channel closed"); }

  // Invariants: receivers wait only while the buffer is empty and no sender
  // waits; senders wait only while the buffer is full and no receiver waits.

  // Delivers `value` (moved from only on kDone). `*wake`: a receiver that
  // took it, to resume after unlocking.
  Outcome SendLocked(T& value, internal::Waiter** wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_) return Outcome::kClosed;
    if (!receivers_.empty()) {
      auto* r = static_cast<RecvWaiter*>(receivers_.PopFront());
      r->item.emplace(std::move(value));
      r->result = absl::OkStatus();
      *wake = r;
      return Outcome::kDone;
    }
    if (buffer_.size() < capacity_ && senders_.empty()) {
      buffer_.push_back(std::move(value));
      return Outcome::kDone;
    }
    return Outcome::kWouldBlock;
  }

  // Takes the oldest item into `*out`. `*wake`: a sender whose item moved
  // into the buffer (or straight to us), to resume after unlocking.
  Outcome RecvLocked(std::optional<T>* out, internal::Waiter** wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!buffer_.empty()) {
      out->emplace(std::move(buffer_.front()));
      buffer_.pop_front();
      if (!senders_.empty()) {  // the freed slot goes to the oldest sender
        auto* s = static_cast<SendWaiter*>(senders_.PopFront());
        buffer_.push_back(std::move(*s->value));
        s->result = absl::OkStatus();
        *wake = s;
      }
      return Outcome::kDone;
    }
    if (!senders_.empty()) {  // capacity 0: take straight from the sender
      auto* s = static_cast<SendWaiter*>(senders_.PopFront());
      out->emplace(std::move(*s->value));
      s->result = absl::OkStatus();
      *wake = s;
      return Outcome::kDone;
    }
    return closed_ ? Outcome::kClosed : Outcome::kWouldBlock;
  }

  const size_t capacity_;
  mutable Mutex mu_;
  std::deque<T> buffer_ ABSL_GUARDED_BY(mu_);
  internal::WaiterQueue senders_ ABSL_GUARDED_BY(mu_);
  internal::WaiterQueue receivers_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename T>
class [[nodiscard]] Channel<T>::SendOp {
 public:
  SendOp(Channel* ch, T value, std::stop_token stop)
      : ch_(ch), value_(std::move(value)), stop_(std::move(stop)) {
    waiter_.value = &value_;
  }
  SendOp(const SendOp&) = delete;
  SendOp& operator=(const SendOp&) = delete;

  bool await_ready() {
    if (stop_.stop_requested()) {
      waiter_.state = internal::WaitState::kCancelled;
      return true;
    }
    return TrySendNow();
  }

  bool await_suspend(std::coroutine_handle<> h) {
    waiter_.Prepare(h, &ch_->mu_);
    hook_.Arm(stop_, &waiter_);
    internal::Waiter* wake = nullptr;
    {
      MutexLock lock(&ch_->mu_);
      if (waiter_.state == internal::WaitState::kCancelled) return false;
      Outcome outcome = ch_->SendLocked(value_, &wake);
      if (outcome == Outcome::kWouldBlock) {
        ch_->senders_.PushBack(&waiter_);
        return true;  // nothing to wake: no receiver was waiting
      }
      waiter_.result = outcome == Outcome::kDone ? absl::OkStatus() : ClosedForSend();
    }
    if (wake != nullptr) wake->Resume();
    return false;
  }

  absl::Status await_resume() {
    hook_.Disarm();
    if (waiter_.state == internal::WaitState::kCancelled) return CancelledError();
    return waiter_.result;
  }

 private:
  // The fast path, before any suspension machinery.
  bool TrySendNow() {
    internal::Waiter* wake = nullptr;
    Outcome outcome;
    {
      MutexLock lock(&ch_->mu_);
      outcome = ch_->SendLocked(value_, &wake);
    }
    if (wake != nullptr) wake->Resume();
    if (outcome == Outcome::kWouldBlock) return false;
    waiter_.result = outcome == Outcome::kDone ? absl::OkStatus() : ClosedForSend();
    return true;
  }

  Channel* const ch_;
  T value_;
  const std::stop_token stop_;
  SendWaiter waiter_;
  internal::CancelHook hook_;
};

template <typename T>
class [[nodiscard]] Channel<T>::RecvOp {
 public:
  RecvOp(Channel* ch, std::stop_token stop) : ch_(ch), stop_(std::move(stop)) {}
  RecvOp(const RecvOp&) = delete;
  RecvOp& operator=(const RecvOp&) = delete;

  bool await_ready() {
    if (stop_.stop_requested()) {
      waiter_.state = internal::WaitState::kCancelled;
      return true;
    }
    internal::Waiter* wake = nullptr;
    Outcome outcome;
    {
      MutexLock lock(&ch_->mu_);
      outcome = ch_->RecvLocked(&waiter_.item, &wake);
    }
    if (wake != nullptr) wake->Resume();
    return Finish(outcome);
  }

  bool await_suspend(std::coroutine_handle<> h) {
    waiter_.Prepare(h, &ch_->mu_);
    hook_.Arm(stop_, &waiter_);
    internal::Waiter* wake = nullptr;
    Outcome outcome;
    {
      MutexLock lock(&ch_->mu_);
      if (waiter_.state == internal::WaitState::kCancelled) return false;
      outcome = ch_->RecvLocked(&waiter_.item, &wake);
      if (outcome == Outcome::kWouldBlock) {
        ch_->receivers_.PushBack(&waiter_);
        return true;
      }
    }
    if (wake != nullptr) wake->Resume();
    Finish(outcome);
    return false;
  }

  absl::StatusOr<T> await_resume() {
    hook_.Disarm();
    if (waiter_.state == internal::WaitState::kCancelled) return CancelledError();
    if (!waiter_.result.ok()) return waiter_.result;
    return std::move(*waiter_.item);
  }

 private:
  // Records a non-waiting outcome; false if the caller has to wait.
  bool Finish(Outcome outcome) {
    if (outcome == Outcome::kWouldBlock) return false;
    waiter_.result = outcome == Outcome::kDone ? absl::OkStatus() : ClosedForRecv();
    return true;
  }

  Channel* const ch_;
  const std::stop_token stop_;
  RecvWaiter waiter_;
  internal::CancelHook hook_;
};

}  // namespace taskq::rt
