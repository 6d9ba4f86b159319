#include "common/runtime/join.h"

#include "common/log.h"

namespace taskq::rt::internal {

std::coroutine_handle<> JoinChild::FinalAwaiter::await_suspend(Handle h) noexcept {
  promise_type& p = h.promise();
  return p.state->ChildFinished(p.index);
}

JoinState::Waiting JoinState::StartAndWaitFor(std::vector<JoinChild>* children, size_t count) {
  for (size_t i = 0; i < children->size(); ++i) {
    JoinChild::promise_type& p = (*children)[i].handle().promise();
    p.state = this;
    p.index = i;
  }
  return Waiting(this, children, count);
}

JoinState::Waiting JoinState::WaitFor(size_t count) { return Waiting(this, nullptr, count); }

bool JoinState::Waiting::await_suspend(std::coroutine_handle<> parent) {
  Executor* ex = CurrentExecutor();
  if (to_start_ != nullptr) {
    // Posted: the children run concurrently on the pool (the parent cannot
    // be resumed before it registers below, so its frame stays put).
    for (JoinChild& child : *to_start_) ResumeOn(ex, child.handle());
  }
  MutexLock lock(&state_->mu_);
  if (state_->finished_ >= count_) return false;
  state_->parent_ = parent;
  state_->parent_executor_ = ex;
  state_->wanted_ = count_;
  return true;
}

std::coroutine_handle<> JoinState::ChildFinished(size_t index) {
  std::coroutine_handle<> parent;
  Executor* ex = nullptr;
  {
    MutexLock lock(&mu_);
    ++finished_;
    order_.push_back(index);
    if (!parent_ || finished_ < wanted_) return std::noop_coroutine();
    parent = std::exchange(parent_, nullptr);
    ex = parent_executor_;
  }
  // Past this point `this` may be destroyed by the resumed parent.
  if (ex == nullptr || ex == CurrentExecutor()) return parent;  // symmetric transfer
  ex->Post(parent);
  return std::noop_coroutine();
}

size_t JoinState::first_finished() const {
  MutexLock lock(&mu_);
  return order_.empty() ? kNone : order_.front();
}

void JoinState::RethrowFirstError(const char* what) const {
  std::vector<size_t> order;
  {
    MutexLock lock(&mu_);
    order = order_;
  }
  std::exception_ptr first;
  for (size_t index : order) {
    if (!errors_[index]) continue;
    if (!first) {
      first = errors_[index];
    } else {
      LogChildError(index, what);
    }
  }
  if (first) std::rethrow_exception(first);
}

void JoinState::LogChildError(size_t index, const char* what) const {
  if (!errors_[index]) return;
  taskq::LogError("%s: task %d threw: %s (logged, not rethrown)", what, static_cast<int>(index),
                  DescribeException(errors_[index]));
}

std::string DescribeException(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "non-standard exception";
  }
}

}  // namespace taskq::rt::internal
