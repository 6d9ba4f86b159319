#include "common/runtime/io_driver.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace taskq::rt {
namespace {

constexpr uint64_t kWakeTag = ~uint64_t{0};  // epoll data of the eventfd
constexpr int kMaxEvents = 256;

uint64_t FdTag(int fd, uint32_t generation) {
  return (uint64_t{generation} << 32) | static_cast<uint32_t>(fd);
}

absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  if (err == EBADF || err == EINVAL) return absl::InvalidArgumentError(msg);
  if (err == ENOMEM || err == ENOSPC) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace

// --- awaiters ---------------------------------------------------------------

SleepAwaiter::SleepAwaiter(IoDriver* io, MonoNanos when, std::stop_token stop)
    : CancellableWait(std::move(stop), io != nullptr ? io->fallback() : nullptr), io_(io) {
  node_.when = when;
  node_.kind = IoDriver::kSleepNode;
  node_.owner = this;
}

void SleepAwaiter::Arm() {
  if (io_ == nullptr) {
    Complete(absl::FailedPreconditionError(
                 "SleepFor/SleepUntil awaited off a scheduler thread: pass the Scheduler "
                 "or IoDriver explicitly"))
        .Run();
    return;
  }
  io_->ArmSleep(this);
}

void SleepAwaiter::Disarm() { io_->DisarmSleep(this); }

FdAwaiter::FdAwaiter(IoDriver* io, int fd, uint32_t events, MonoNanos deadline,
                     std::stop_token stop)
    : CancellableWait(std::move(stop), io != nullptr ? io->fallback() : nullptr),
      io_(io),
      fd_(fd),
      events_(events) {
  deadline_node_.when = deadline;
  deadline_node_.kind = IoDriver::kFdDeadlineNode;
  deadline_node_.owner = this;
}

void FdAwaiter::Arm() {
  if (io_ == nullptr) {
    Complete(absl::FailedPreconditionError(
                 "WaitReadable/WaitWritable awaited off a scheduler thread: pass the "
                 "Scheduler or IoDriver explicitly"))
        .Run();
    return;
  }
  io_->ArmFd(this);
}

void FdAwaiter::Disarm() { io_->DisarmFd(this); }

// --- driver -----------------------------------------------------------------

IoDriver::IoDriver(IoDriverOptions options)
    : name_(std::move(options.name)), fallback_(options.fallback) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    LogError("io driver %s: cannot create epoll/eventfd: %s", name_, strerror(errno));
    std::abort();
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    LogError("io driver %s: cannot watch its eventfd: %s", name_, strerror(errno));
    std::abort();
  }
  thread_ = std::thread([this] { Loop(); });
  thread_id_ = thread_.get_id();
}

IoDriver::~IoDriver() {
  Stop();
  close(wake_fd_);
  close(epoll_fd_);
}

bool IoDriver::stopped() const {
  MutexLock lock(&mu_);
  return stopping_;
}

size_t IoDriver::pending_timers() const {
  MutexLock lock(&mu_);
  return timers_.size();
}

size_t IoDriver::pending_fd_waits() const {
  MutexLock lock(&mu_);
  return fd_waits_;
}

void IoDriver::Wake() {
  uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the driver will wake.
  while (write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void IoDriver::Loop() {
  std::string thread_name = name_.substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  epoll_event events[kMaxEvents];
  while (true) {
    MonoNanos until;
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
      until = timers_.TopWhen();
      sleeping_until_ = until;
    }
    int n = WaitForEvents(events, kMaxEvents, until);
    Batch batch;
    {
      MutexLock lock(&mu_);
      sleeping_until_ = kAwake;
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kWakeTag) {
          uint64_t count;
          while (read(wake_fd_, &count, sizeof count) < 0 && errno == EINTR) {
          }
        } else {
          HandleFdEventLocked(events[i], batch);
        }
      }
      MonoNanos now = MonotonicNow();
      while (TimerNode* node = timers_.PopExpired(now)) {
        ExpireLocked(node, absl::OkStatus(), batch);
      }
    }
    RunBatch(batch);
  }
}

int IoDriver::WaitForEvents(epoll_event* events, int max, MonoNanos until) {
  int n;
  if (use_pwait2_) {
    timespec ts{};
    timespec* timeout = nullptr;
    if (until != kMonoNever) {
      MonoNanos delta = std::max<MonoNanos>(0, until - MonotonicNow());
      ts.tv_sec = delta / 1'000'000'000;
      ts.tv_nsec = delta % 1'000'000'000;
      timeout = &ts;
    }
    n = epoll_pwait2(epoll_fd_, events, max, timeout, nullptr);
    if (n < 0 && errno == ENOSYS) {
      LogWarning("io driver %s: no epoll_pwait2; timers round up to milliseconds", name_);
      use_pwait2_ = false;
    }
  }
  if (!use_pwait2_) {
    int timeout_ms = -1;
    if (until != kMonoNever) {
      MonoNanos delta = std::max<MonoNanos>(0, until - MonotonicNow());
      // Round up: a timer must never fire early.
      MonoNanos ms = (delta + 999'999) / 1'000'000;
      timeout_ms = static_cast<int>(std::min<MonoNanos>(ms, 1'000'000'000));
    }
    n = epoll_wait(epoll_fd_, events, max, timeout_ms);
  }
  if (n < 0) {
    if (errno != EINTR) LogError("io driver %s: epoll_wait: %s", name_, strerror(errno));
    return 0;
  }
  return n;
}

void IoDriver::RunBatch(Batch& batch) {
  for (Resumption& r : batch.resumptions) std::move(r).Run();
  for (auto& [timer, status] : batch.callbacks) {
    timer->fn_(std::move(status));
    MutexLock lock(&mu_);
    timer->io_.mu_.AssertHeld();  // timer->io_ is *this
    timer->state_ = Timer::kDone;
    // Under the lock: once it is released a Cancel() may return and the
    // Timer be destroyed; the CondVar itself belongs to the driver.
    callback_done_.SignalAll();
  }
}

bool IoDriver::InsertTimerLocked(TimerNode* node) {
  timers_.Insert(node);
  if (node->when < sleeping_until_) {
    sleeping_until_ = kAwake;  // one wake-up is enough until it sleeps again
    return true;
  }
  return false;
}

void IoDriver::ExpireLocked(TimerNode* node, const absl::Status& status, Batch& batch) {
  switch (node->kind) {
    case kSleepNode: {
      auto* w = static_cast<SleepAwaiter*>(node->owner);
      if (Resumption r = w->Complete(status)) batch.resumptions.push_back(std::move(r));
      break;
    }
    case kFdDeadlineNode: {
      auto* w = static_cast<FdAwaiter*>(node->owner);
      DetachFdWaiterLocked(w);
      absl::Status s = status.ok() ? DeadlineExceededError() : status;
      if (Resumption r = w->Complete(std::move(s))) batch.resumptions.push_back(std::move(r));
      break;
    }
    case kCallbackNode: {
      auto* t = static_cast<Timer*>(node->owner);
      t->io_.mu_.AssertHeld();  // t->io_ is *this
      t->state_ = Timer::kRunning;
      t->runner_ = std::this_thread::get_id();
      batch.callbacks.emplace_back(t, status);
      break;
    }
    default:
      LogError("io driver %s: timer node of unknown kind %d", name_, node->kind);
      std::abort();
  }
}

void IoDriver::Stop() {
  MutexLock join_lock(&join_mu_);
  if (joined_) return;
  if (std::this_thread::get_id() == thread_id_) {
    LogError("io driver %s: Stop called on its own thread (would deadlock)", name_);
    std::abort();
  }
  Batch batch;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    absl::Status shutdown = ShutdownError();
    while (TimerNode* node = timers_.Pop()) ExpireLocked(node, shutdown, batch);
    for (auto& [fd, state] : fds_) {
      for (FdAwaiter* w : state.waiters) {
        if (Resumption r = w->Complete(shutdown)) batch.resumptions.push_back(std::move(r));
      }
      if (state.in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    }
    fds_.clear();
    fd_waits_ = 0;
  }
  Wake();
  thread_.join();
  joined_ = true;
  // The pool (if any) is still running: cancelled coroutines resume there.
  RunBatch(batch);
}

// --- sleeps -------------------------------------------------------------------

void IoDriver::ArmSleep(SleepAwaiter* w) {
  if (w->node_.when <= MonotonicNow()) {
    w->Complete(absl::OkStatus()).Run();  // already due: continue without suspending
    return;
  }
  bool wake;
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      w->Complete(ShutdownError()).Run();
      return;
    }
    wake = InsertTimerLocked(&w->node_);
  }
  if (wake) Wake();
}

void IoDriver::DisarmSleep(SleepAwaiter* w) {
  MutexLock lock(&mu_);
  timers_.Remove(&w->node_);
}

// --- file descriptors ---------------------------------------------------------

void IoDriver::ArmFd(FdAwaiter* w) {
  bool wake = false;
  std::optional<absl::Status> done_now;  // finished without registering
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      done_now = ShutdownError();
    } else {
      auto [it, inserted] = fds_.try_emplace(w->fd_);
      if (inserted) it->second.generation = next_generation_++;
      it->second.waiters.push_back(w);
      ++fd_waits_;
      absl::Status s = SyncFdLocked(w->fd_);
      if (!s.ok()) {
        DetachFdWaiterLocked(w);
        // Regular files and directories cannot be polled: like poll(2),
        // treat them as always ready.
        done_now = absl::IsPermissionDenied(s) ? absl::OkStatus() : s;
      } else if (w->deadline_node_.when != kMonoNever) {
        wake = InsertTimerLocked(&w->deadline_node_);
      }
    }
  }
  // Not registered anywhere, and the stop callback is not installed yet:
  // nobody else can complete it.
  if (done_now) w->Complete(*std::move(done_now)).Run();
  if (wake) Wake();
}

void IoDriver::DisarmFd(FdAwaiter* w) {
  MutexLock lock(&mu_);
  timers_.Remove(&w->deadline_node_);
  DetachFdWaiterLocked(w);
}

void IoDriver::DetachFdWaiterLocked(FdAwaiter* w) {
  auto it = fds_.find(w->fd_);
  if (it == fds_.end()) return;
  std::vector<FdAwaiter*>& waiters = it->second.waiters;
  auto pos = std::find(waiters.begin(), waiters.end(), w);
  if (pos == waiters.end()) return;
  waiters.erase(pos);
  --fd_waits_;
  (void)SyncFdLocked(w->fd_);  // only narrows or removes interest
}

void IoDriver::HandleFdEventLocked(const epoll_event& ev, Batch& batch) {
  int fd = static_cast<int>(static_cast<uint32_t>(ev.data.u64));
  uint32_t generation = static_cast<uint32_t>(ev.data.u64 >> 32);
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.generation != generation) return;  // stale
  FdState& state = it->second;
  state.armed = 0;  // EPOLLONESHOT disarmed the registration
  const bool everyone = (ev.events & (EPOLLERR | EPOLLHUP)) != 0;
  std::vector<FdAwaiter*> still, ready;
  for (FdAwaiter* w : state.waiters) {
    ((everyone || (ev.events & w->events_) != 0) ? ready : still).push_back(w);
  }
  state.waiters.swap(still);
  // Update epoll BEFORE completing the ready waiters: a waiter that is
  // still inside await_suspend continues at once when completed, and may
  // close the fd; our epoll_ctl must not race with that close.
  absl::Status s = SyncFdLocked(fd);
  for (FdAwaiter* w : ready) {
    --fd_waits_;
    timers_.Remove(&w->deadline_node_);
    // A waiter whose stop won keeps its claim; its Disarm finds it gone.
    if (Resumption r = w->Complete(absl::OkStatus())) batch.resumptions.push_back(std::move(r));
  }
  if (!s.ok()) {
    // Cannot re-arm (the fd was closed under us?): fail the rest rather
    // than leave them waiting for an event that cannot come.
    auto again = fds_.find(fd);
    if (again == fds_.end()) return;
    for (FdAwaiter* w : again->second.waiters) {
      --fd_waits_;
      timers_.Remove(&w->deadline_node_);
      if (Resumption r = w->Complete(s)) batch.resumptions.push_back(std::move(r));
    }
    fds_.erase(again);
  }
}

absl::Status IoDriver::SyncFdLocked(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return absl::OkStatus();
  FdState& state = it->second;
  uint32_t want = 0;
  for (const FdAwaiter* w : state.waiters) want |= w->events_;
  if (want == 0) {
    // Errors ignored: the fd may already be closed (epoll forgot it then).
    if (state.in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    fds_.erase(it);
    return absl::OkStatus();
  }
  if (want == state.armed) return absl::OkStatus();
  epoll_event ev{};
  ev.events = want | EPOLLONESHOT;
  ev.data.u64 = FdTag(fd, state.generation);
  int op = state.in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  int rc = epoll_ctl(epoll_fd_, op, fd, &ev);
  if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {
    rc = epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);  // closed and reopened meanwhile
  } else if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST) {
    rc = epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
  }
  if (rc != 0) {
    int err = errno;
    if (err == EPERM) {
      return absl::PermissionDeniedError(absl::StrCat("fd ", fd, " cannot be polled"));
    }
    return ErrnoStatus(err, absl::StrCat("waiting on fd ", fd));
  }
  state.in_epoll = true;
  state.armed = want;
  return absl::OkStatus();
}

// --- callback timers ------------------------------------------------------------

IoDriver::Timer::Timer(IoDriver& io, absl::Time deadline, absl::AnyInvocable<void(absl::Status)> fn)
    : io_(io), fn_(std::move(fn)) {
  Start(MonotonicDeadline(deadline));
}

IoDriver::Timer::Timer(IoDriver& io, absl::Duration after,
                       absl::AnyInvocable<void(absl::Status)> fn)
    : io_(io), fn_(std::move(fn)) {
  Start(MonotonicAfter(after));
}

void IoDriver::Timer::Start(MonoNanos when) {
  node_.when = when;
  node_.kind = kCallbackNode;
  node_.owner = this;
  bool wake = false;
  bool run_now = false;
  {
    MutexLock lock(&io_.mu_);
    if (io_.stopping_) {
      state_ = kRunning;
      runner_ = std::this_thread::get_id();
      run_now = true;
    } else {
      state_ = kPending;
      wake = io_.InsertTimerLocked(&node_);
    }
  }
  if (wake) io_.Wake();
  if (!run_now) return;
  fn_(ShutdownError());
  MutexLock lock(&io_.mu_);
  state_ = kDone;
  io_.callback_done_.SignalAll();
}

bool IoDriver::Timer::Cancel() {
  MutexLock lock(&io_.mu_);
  if (state_ == kPending) {
    io_.timers_.Remove(&node_);
    state_ = kDone;
    return true;
  }
  while (state_ == kRunning && runner_ != std::this_thread::get_id()) {
    io_.callback_done_.Wait(&io_.mu_);
  }
  return false;
}

}  // namespace taskq::rt
