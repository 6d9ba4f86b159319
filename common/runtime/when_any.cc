#include "common/runtime/when_any.h"

namespace taskq::rt {

Task<size_t> WhenAny(std::stop_source stop, std::vector<Task<void>> tasks) {
  if (tasks.empty()) throw std::invalid_argument("WhenAny needs at least one task");
  const size_t n = tasks.size();
  internal::JoinState state(n);
  std::vector<std::optional<std::monostate>> slots(n);
  std::vector<internal::JoinChild> children;
  children.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    children.push_back(internal::RunJoinChild(std::move(tasks[i]), &slots[i], &state, i));
  }
  co_await state.StartAndWaitFor(&children, 1);
  stop.request_stop();
  co_await state.WaitFor(n);
  const size_t winner = state.first_finished();
  for (size_t i = 0; i < n; ++i) {
    if (i != winner) state.LogChildError(i, "WhenAny");
  }
  if (state.error(winner)) std::rethrow_exception(state.error(winner));
  co_return winner;
}

}  // namespace taskq::rt
