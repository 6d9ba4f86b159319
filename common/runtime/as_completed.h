// AsCompleted: run tasks concurrently and deliver each result as soon as
// its task finishes, in completion order — the seeds' asyncio.as_completed
// (and gevent's iwait), built on a Channel so any number of consumers can
// read the results.
//
//   rt::Channel<rt::Completed<Reply>> done(requests.size());
//   co_await rt::WhenAll(
//       rt::AsCompleted(std::move(fetches), done),       // producer
//       [](rt::Channel<rt::Completed<Reply>>& ch) -> rt::Task<void> {
//         while (true) {
//           auto next = co_await ch.Recv();
//           if (!next.ok()) break;                          // closed: all delivered
//           Show(next->index, next->value);                 // fastest first
//         }
//       }(done));
//
// - Every task starts at once, posted to the caller's executor (inline
//   without one). Each result is sent to `out` as {index in `tasks`, value};
//   when every task has finished, AsCompleted closes `out` and returns.
// - Exceptions: a task that throws sends nothing; once all have finished
//   the first exception (in finishing order) is rethrown from AsCompleted
//   (the others are logged), after `out` was closed.
// - Stopping early: the consumer may Close() `out`; results not yet sent
//   are then dropped and AsCompleted still returns only after every task
//   finished (cancel them through their stop tokens to make that quick).
//   Give `out` capacity >= tasks.size() if the consumer may stop reading
//   without closing it, or pending sends keep their tasks from finishing.
// - `out` must outlive the returned Task (structured: await both together,
//   e.g. under WhenAll as above).
//
// Thread-safety: as WhenAll; the Channel is safe from any thread.
#pragma once

#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/runtime/channel.h"
#include "common/runtime/join.h"
#include "common/runtime/task.h"

namespace taskq::rt {

// One finished task's result: its position in the input and its value.
template <typename T>
struct Completed {
  size_t index;
  T value;
};

namespace internal {
template <typename T>
JoinChild RunCompletedChild(Task<T> task, Channel<Completed<T>>* out, JoinState* state,
                            size_t index) {
  try {
    T value = co_await std::move(task);
    // Fails only if the consumer closed `out` to stop early: drop the value.
    (void)co_await out->Send(Completed<T>{index, std::move(value)});
  } catch (...) {
    state->SetError(index, std::current_exception());
  }
}
}  // namespace internal

template <typename T>
  requires(!std::is_void_v<T>)
Task<void> AsCompleted(std::vector<Task<T>> tasks, Channel<Completed<T>>& out) {
  const size_t n = tasks.size();
  internal::JoinState state(n);
  std::vector<internal::JoinChild> children;
  children.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    children.push_back(internal::RunCompletedChild(std::move(tasks[i]), &out, &state, i));
  }
  co_await state.StartAndWaitFor(&children, n);
  out.Close();
  state.RethrowFirstError("AsCompleted");
}

}  // namespace taskq::rt
