#include "common/runtime/wait_queue.h"

namespace taskq::rt::internal {

void CancelWaiter(Waiter* w) {
  {
    MutexLock lock(w->mu);
    switch (w->state) {
      case WaitState::kIdle:
        // Not queued yet: await_suspend will see this and not suspend.
        w->state = WaitState::kCancelled;
        return;
      case WaitState::kQueued:
        w->queue->Cancel(w);
        break;
      case WaitState::kWoken:
      case WaitState::kCancelled:
        return;  // a waker got there first; it resumes the waiter
    }
  }
  w->Resume();
}

}  // namespace taskq::rt::internal
