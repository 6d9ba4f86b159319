#include "worker/handler_registry.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"

namespace taskq {

bool HandlerContext::WaitForStop(absl::Time deadline) const {
  if (stop_ == nullptr) {
    absl::SleepFor(deadline - absl::Now());
    return false;
  }
  return stop_->WaitUntil(deadline);
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

absl::Status HandlerRegistry::Register(absl::string_view name, Handler handler) {
  if (auto s = ValidateName("handler", name); !s.ok()) return s;
  if (!handler) {
    return absl::InvalidArgumentError(absl::StrCat("handler ", name, " is an empty function"));
  }
  MutexLock lock(&mu_);
  auto [it, inserted] = handlers_.try_emplace(std::string(name), nullptr);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("a handler named ", name, " is already registered"));
  }
  it->second = std::make_shared<const Handler>(std::move(handler));
  return absl::OkStatus();
}

absl::StatusOr<std::string> HandlerRegistry::Run(const HandlerContext& context) const {
  const std::string& name = context.task().handler();
  std::shared_ptr<const Handler> handler;
  {
    MutexLock lock(&mu_);
    auto it = handlers_.find(name);
    if (it != handlers_.end()) handler = it->second;
  }
  if (handler == nullptr) {
    return absl::UnimplementedError(absl::StrCat("no handler named \"", absl::CHexEscape(name),
                                                 "\" on worker ", context.worker_id()));
  }
  try {
    return (*handler)(context);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("handler ", name, " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("handler ", name, " threw a non-standard exception"));
  }
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
