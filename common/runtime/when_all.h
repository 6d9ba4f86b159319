// WhenAll: run several tasks concurrently and wait for all of them — the
// seeds' gevent.joinall / asyncio.gather.
//
//   std::vector<rt::Task<int>> jobs;
//   for (int i = 1; i <= 10; ++i) jobs.push_back(Square(i));
//   std::vector<int> squares = co_await rt::WhenAll(std::move(jobs));  // in input order
//
//   auto [user, quota] = co_await rt::WhenAll(LoadUser(id), LoadQuota(id));  // tuple
//   co_await rt::WhenAll(std::move(void_tasks));                             // Task<void>
//
// - Every task starts at once, each posted to the caller's executor as its
//   own coroutine (so they run in parallel on a pool); with no executor
//   (a plain thread) they start inline, one after another, and still
//   overlap whenever one of them waits.
// - The caller resumes when every task has finished — even when some
//   threw — so no task outlives the call. Results come back in input order.
//   In the variadic form a Task<void> contributes std::monostate.
// - Exceptions: if tasks threw, the first one to throw (in finishing order)
//   is rethrown from the co_await once all have finished; the others are
//   logged (LogError), never dropped silently. Tasks that return
//   absl::Status / StatusOr are values here: check them in the result.
// - The caller resumes on the executor it awaited on (on the last task's
//   thread without a hop when that is the same executor).
//
// Thread-safety: the returned Task is used like any Task (awaited once).
// The tasks may run on any threads of the caller's executor at the same
// time, so whatever they share must be synchronised.
#pragma once

#include <cstddef>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/runtime/join.h"
#include "common/runtime/task.h"

namespace taskq::rt {

template <typename T>
  requires(!std::is_void_v<T>)
Task<std::vector<T>> WhenAll(std::vector<Task<T>> tasks) {
  const size_t n = tasks.size();
  internal::JoinState state(n);
  std::vector<std::optional<T>> slots(n);
  std::vector<internal::JoinChild> children;
  children.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    children.push_back(internal::RunJoinChild(std::move(tasks[i]), &slots[i], &state, i));
  }
  co_await state.StartAndWaitFor(&children, n);
  state.RethrowFirstError("WhenAll");
  std::vector<T> results;
  results.reserve(n);
  for (std::optional<T>& slot : slots) results.push_back(std::move(*slot));
  co_return results;
}

Task<void> WhenAll(std::vector<Task<void>> tasks);

namespace internal {
template <typename... Ts, size_t... I>
std::vector<JoinChild> MakeJoinChildren(JoinState* state,
                                        std::tuple<std::optional<JoinValue<Ts>>...>& slots,
                                        std::index_sequence<I...>, Task<Ts>... tasks) {
  std::vector<JoinChild> children;
  children.reserve(sizeof...(Ts));
  (children.push_back(RunJoinChild(std::move(tasks), &std::get<I>(slots), state, I)), ...);
  return children;
}
}  // namespace internal

template <typename... Ts>
  requires(sizeof...(Ts) > 0)
Task<std::tuple<internal::JoinValue<Ts>...>> WhenAll(Task<Ts>... tasks) {
  internal::JoinState state(sizeof...(Ts));
  std::tuple<std::optional<internal::JoinValue<Ts>>...> slots;
  std::vector<internal::JoinChild> children = internal::MakeJoinChildren<Ts...>(
      &state, slots, std::index_sequence_for<Ts...>{}, std::move(tasks)...);
  co_await state.StartAndWaitFor(&children, sizeof...(Ts));
  state.RethrowFirstError("WhenAll");
  co_return std::apply(
      [](auto&... slot) { return std::tuple<internal::JoinValue<Ts>...>(std::move(*slot)...); },
      slots);
}

}  // namespace taskq::rt
