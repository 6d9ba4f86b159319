#include "common/limits.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace taskq {

absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " name is empty"));
  if (name.size() > kMaxQueueNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " name is ", name.size(), " bytes; the limit is ", kMaxQueueNameBytes));
  }
  if (name[0] == '.') {
    return absl::InvalidArgumentError(absl::StrCat(what, " name must not start with '.'"));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " name \"", absl::CEscape(name), "\" has a character outside [A-Za-z0-9_.:-]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace taskq
