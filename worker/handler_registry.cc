#include "worker/handler_registry.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "common/limits.h"
#include "common/runtime/executor.h"

namespace taskq {
namespace {

// Marks a status made by ReleaseTask; the payload is the delay in ms.
constexpr char kReleasePayloadUrl[] = "taskq.v1/worker.release_delay_ms";

absl::Duration ClampReleaseDelay(absl::Duration delay) {
  return std::clamp(delay, absl::ZeroDuration(), absl::Milliseconds(kMaxDelayMs));
}

absl::Status ExceptionStatus(absl::string_view name, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("handler ", name, " threw: ", ex.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("handler ", name, " threw a non-standard exception"));
  }
}

absl::StatusOr<std::string> CallSync(const Handler& handler, const HandlerContext& context) {
  try {
    return handler(context);
  } catch (...) {
    return ExceptionStatus(context.task().handler(), std::current_exception());
  }
}

}  // namespace

bool HandlerContext::WaitForStop(absl::Time deadline) const {
  if (!stop_.stop_possible()) {
    absl::SleepFor(deadline - absl::Now());
    return false;
  }
  Mutex mu;
  CondVar cv;
  bool stopped = false;
  // Runs inline if the stop was already requested.
  std::stop_callback wake(stop_, [&mu, &cv, &stopped] {
    MutexLock lock(&mu);
    stopped = true;
    cv.SignalAll();
  });
  MutexLock lock(&mu);
  while (!stopped && absl::Now() < deadline) cv.WaitWithDeadline(&mu, deadline);
  return stopped;
}

bool IsPermanentFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
      return true;
    default:
      return false;
  }
}

absl::Status ReleaseTask(absl::Duration delay) {
  delay = ClampReleaseDelay(delay);
  absl::Status status(absl::StatusCode::kAborted,
                      absl::StrCat("handler asked to release the task for ",
                                   absl::FormatDuration(delay)));
  status.SetPayload(kReleasePayloadUrl, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(delay))));
  return status;
}

bool IsReleaseRequest(const absl::Status& status, absl::Duration* delay) {
  if (status.code() != absl::StatusCode::kAborted) return false;
  absl::optional<absl::Cord> payload = status.GetPayload(kReleasePayloadUrl);
  if (!payload.has_value()) return false;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &ms)) ms = 0;
  if (delay != nullptr) *delay = ClampReleaseDelay(absl::Milliseconds(ms));
  return true;
}

absl::Status HandlerRegistry::Register(absl::string_view name, Handler handler) {
  if (!handler) {
    return absl::InvalidArgumentError(absl::StrCat("handler ", name, " is an empty function"));
  }
  return Add(name, Entry{std::move(handler), nullptr});
}

absl::Status HandlerRegistry::RegisterInline(absl::string_view name, Handler handler) {
  if (!handler) {
    return absl::InvalidArgumentError(absl::StrCat("handler ", name, " is an empty function"));
  }
  return Add(name, Entry{std::move(handler), nullptr, /*inline_sync=*/true});
}

absl::Status HandlerRegistry::RegisterAsync(absl::string_view name, AsyncHandler handler) {
  if (!handler) {
    return absl::InvalidArgumentError(absl::StrCat("handler ", name, " is an empty function"));
  }
  return Add(name, Entry{nullptr, std::move(handler)});
}

absl::Status HandlerRegistry::Add(absl::string_view name, Entry entry) {
  if (auto s = ValidateName("handler", name); !s.ok()) return s;
  MutexLock lock(&mu_);
  auto [it, inserted] = handlers_.try_emplace(std::string(name), nullptr);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("a handler named ", name, " is already registered"));
  }
  it->second = std::make_shared<const Entry>(std::move(entry));
  return absl::OkStatus();
}

rt::Task<absl::StatusOr<std::string>> HandlerRegistry::Run(HandlerContext& context,
                                                           rt::Executor* cpu) const {
  const std::string& name = context.task().handler();
  std::shared_ptr<const Entry> entry;  // keeps the function alive while it runs
  {
    MutexLock lock(&mu_);
    auto it = handlers_.find(name);
    if (it != handlers_.end()) entry = it->second;
  }
  if (entry == nullptr) {
    co_return absl::UnimplementedError(absl::StrCat(
        "no handler named \"", absl::CHexEscape(name), "\" on worker ", context.worker_id()));
  }
  if (entry->async) {
    std::exception_ptr thrown;
    try {
      absl::StatusOr<std::string> result = co_await entry->async(context);
      co_return result;
    } catch (...) {
      thrown = std::current_exception();
    }
    co_return ExceptionStatus(name, thrown);
  }
  // Synchronous: hop onto the CPU pool for the call, then back home, so
  // the caller continues where it was (the worker's I/O scheduler).
  rt::Executor* home = rt::CurrentExecutor();
  const bool hop = cpu != nullptr && cpu != home && !entry->inline_sync;
  if (hop) co_await rt::ScheduleOn(*cpu);
  absl::StatusOr<std::string> result = CallSync(entry->sync, context);
  if (hop && home != nullptr) co_await rt::ScheduleOn(*home);
  co_return result;
}

bool HandlerRegistry::Has(absl::string_view name) const {
  MutexLock lock(&mu_);
  return handlers_.contains(name);
}

std::vector<std::string> HandlerRegistry::Names() const {
  std::vector<std::string> names;
  {
    MutexLock lock(&mu_);
    for (const auto& [name, handler] : handlers_) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace taskq
