#include "master/keda_metadata.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/limits.h"

namespace taskq {
namespace {

constexpr char kQueueKey[] = "queue";
constexpr char kTargetKey[] = "targetPerWorker";
constexpr char kActivationKey[] = "activationDepth";
constexpr char kFromEnvSuffix[] = "FromEnv";

// KEDA puts these in the same map (its trigger settings, its TLS options).
bool IsKedaKey(absl::string_view key) {
  static constexpr absl::string_view kKeys[] = {
      "scalerAddress", "enableTLS",     "unsafeSsl",    "caCert",
      "tlsCertFile",   "tlsClientCert", "tlsClientKey"};
  return std::find(std::begin(kKeys), std::end(kKeys), key) != std::end(kKeys);
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("scalerMetadata: ", what));
}

absl::StatusOr<int64_t> ParseCount(absl::string_view key, absl::string_view value, int64_t min,
                                   int64_t max) {
  int64_t n = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(value), &n) || n < min || n > max) {
    return Invalid(absl::StrCat(key, " is \"", absl::CHexEscape(value.substr(0, 64)),
                                "\": want a whole number from ", min, " to ", max));
  }
  return n;
}

absl::StatusOr<std::vector<std::string>> ParseQueues(absl::string_view value) {
  std::vector<std::string> queues;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    if (absl::Status s = ValidateName("queue", part); !s.ok()) {
      return Invalid(absl::StrCat(kQueueKey, ": ", s.message()));
    }
    if (std::find(queues.begin(), queues.end(), part) != queues.end()) continue;
    if (queues.size() == kMaxKedaQueues) {
      return Invalid(absl::StrCat(kQueueKey, " names more than ", kMaxKedaQueues, " queues"));
    }
    queues.emplace_back(part);
  }
  if (queues.empty()) {
    return Invalid(absl::StrCat(kQueueKey, " names no queue: want e.g. \"tasks\" or \"a,b\""));
  }
  return queues;
}

}  // namespace

absl::StatusOr<KedaQuery> ParseKedaMetadata(
    const google::protobuf::Map<std::string, std::string>& metadata) {
  if (metadata.size() > kMaxKedaMetadataEntries) {
    return Invalid(absl::StrCat(metadata.size(), " keys; the limit is ", kMaxKedaMetadataEntries));
  }
  const std::string* queue = nullptr;
  const std::string* target = nullptr;
  const std::string* activation = nullptr;
  for (const auto& [full_key, value] : metadata) {
    if (full_key.size() > kMaxKedaMetadataKeyBytes) {
      return Invalid(absl::StrCat("a key is ", full_key.size(), " bytes; the limit is ",
                                  kMaxKedaMetadataKeyBytes));
    }
    if (value.size() > kMaxKedaMetadataValueBytes) {
      return Invalid(absl::StrCat("the value of ", full_key, " is ", value.size(),
                                  " bytes; the limit is ", kMaxKedaMetadataValueBytes));
    }
    if (IsKedaKey(full_key)) continue;
    absl::string_view key = full_key;
    absl::ConsumeSuffix(&key, kFromEnvSuffix);
    const std::string** slot = key == kQueueKey         ? &queue
                               : key == kTargetKey      ? &target
                               : key == kActivationKey  ? &activation
                                                        : nullptr;
    if (slot == nullptr) {
      return Invalid(absl::StrCat("unknown key \"", absl::CHexEscape(full_key),
                                  "\": taskq reads queue, targetPerWorker and activationDepth"));
    }
    if (*slot != nullptr) {
      return Invalid(absl::StrCat(key, " is given twice (as ", key, " and ", key,
                                  kFromEnvSuffix, ")"));
    }
    *slot = &value;
  }
  if (queue == nullptr) return Invalid("queue is missing: name the queue to scale on");
  if (target == nullptr) {
    return Invalid("targetPerWorker is missing: how many queued tasks one worker replica takes");
  }
  KedaQuery query;
  auto queues = ParseQueues(*queue);
  if (!queues.ok()) return queues.status();
  query.queues = *std::move(queues);
  auto per_worker = ParseCount(kTargetKey, *target, 1, kMaxKedaTargetPerWorker);
  if (!per_worker.ok()) return per_worker.status();
  query.target_per_worker = *per_worker;
  if (activation != nullptr) {
    auto depth = ParseCount(kActivationKey, *activation, 0, kMaxKedaActivationDepth);
    if (!depth.ok()) return depth.status();
    query.activation_depth = *depth;
  }
  return query;
}

absl::StatusOr<uint64_t> QueueDepth(QueueEngine& engine, const KedaQuery& query) {
  uint64_t depth = 0;
  for (const std::string& queue : query.queues) {
    auto stats = engine.Stats(queue);
    if (absl::IsNotFound(stats.status())) continue;  // not created yet: empty
    if (!stats.ok()) return stats.status();
    depth += stats->ready() + stats->leased();
  }
  return depth;
}

}  // namespace taskq
