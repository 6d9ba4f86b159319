#include "common/runtime/executor.h"

namespace taskq::rt {
namespace {
thread_local Executor* current_executor = nullptr;
}  // namespace

Executor* CurrentExecutor() { return current_executor; }

namespace internal {
void SetCurrentExecutor(Executor* ex) { current_executor = ex; }
}  // namespace internal

}  // namespace taskq::rt
