// WhenAny: race several tasks; the first to finish wins and the others are
// told to stop — the seeds' asyncio.wait(..., return_when=FIRST_COMPLETED)
// plus the cancel-the-rest step, done as structured concurrency.
//
// The caller creates the tasks with tokens from one std::stop_source and
// passes that source. When the first task finishes, WhenAny requests stop
// on it (so the others' waits complete CANCELLED and they wind down), then
// WAITS for every other task to finish before it returns: no task frame
// outlives the call, and nothing they reference may be released early.
//
// Racing a result against a timeout (SleepFor is the timers' awaitable):
//
//   std::stop_source stop;
//   std::vector<rt::Task<absl::StatusOr<Reply>>> racers;
//   racers.push_back(Fetch(request, stop.get_token()));
//   racers.push_back([](std::stop_token st) -> rt::Task<absl::StatusOr<Reply>> {
//     absl::Status slept = co_await rt::SleepFor(absl::Seconds(5), st);
//     if (!slept.ok()) co_return slept;           // CANCELLED: Fetch won
//     co_return absl::DeadlineExceededError("fetch timed out after 5s");
//   }(stop.get_token()));
//   auto [winner, reply] = co_await rt::WhenAny(stop, std::move(racers));
//   // winner == 0: `reply` is Fetch's result; 1: the timeout's error.
//
// (A lambda coroutine must take what it needs as parameters, not captures:
// the lambda object is gone before the coroutine runs.)
//
// - All tasks start at once, posted to the caller's executor (inline
//   without one), as in WhenAll.
// - The result is the winner's index and value (Task<void>: the index).
//   If the winner threw, that exception is rethrown after the others
//   finished. The losers' values are discarded; their exceptions are logged.
// - `stop` is a handle: the copy shares the caller's stop state, so the
//   caller sees stop_requested() afterwards, and stop already requested
//   before the call simply makes every task see it at once. To chain an
//   outer cancellation, forward it: std::stop_callback link(outer, [&] {
//   stop.request_stop(); }).
// - An empty `tasks` throws std::invalid_argument from the co_await.
//
// Thread-safety: as WhenAll.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/runtime/join.h"
#include "common/runtime/task.h"

namespace taskq::rt {

template <typename T>
  requires(!std::is_void_v<T>)
Task<std::pair<size_t, T>> WhenAny(std::stop_source stop, std::vector<Task<T>> tasks) {
  if (tasks.empty()) throw std::invalid_argument("WhenAny needs at least one task");
  const size_t n = tasks.size();
  internal::JoinState state(n);
  std::vector<std::optional<T>> slots(n);
  std::vector<internal::JoinChild> children;
  children.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    children.push_back(internal::RunJoinChild(std::move(tasks[i]), &slots[i], &state, i));
  }
  co_await state.StartAndWaitFor(&children, 1);
  stop.request_stop();  // the losers wind down
  co_await state.WaitFor(n);
  const size_t winner = state.first_finished();
  for (size_t i = 0; i < n; ++i) {
    if (i != winner) state.LogChildError(i, "WhenAny");
  }
  if (state.error(winner)) std::rethrow_exception(state.error(winner));
  co_return std::pair<size_t, T>(winner, std::move(*slots[winner]));
}

// Task<void> racers: the winner's index.
Task<size_t> WhenAny(std::stop_source stop, std::vector<Task<void>> tasks);

}  // namespace taskq::rt
