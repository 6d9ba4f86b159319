#include "common/runtime/when_all.h"

namespace taskq::rt {

Task<void> WhenAll(std::vector<Task<void>> tasks) {
  const size_t n = tasks.size();
  internal::JoinState state(n);
  std::vector<std::optional<std::monostate>> slots(n);
  std::vector<internal::JoinChild> children;
  children.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    children.push_back(internal::RunJoinChild(std::move(tasks[i]), &slots[i], &state, i));
  }
  co_await state.StartAndWaitFor(&children, n);
  state.RethrowFirstError("WhenAll");
}

}  // namespace taskq::rt
