#include "master/cluster/placement.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace taskq {
namespace {

// A stable 64-bit hash (FNV-1a): absl::Hash is salted per process, and
// every master must compute the same choice.
uint64_t StableHash(absl::string_view a, absl::string_view b) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](absl::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix(absl::string_view("\0", 1));
  mix(b);
  // Finalizer (splitmix64): FNV's low bits alone spread short names poorly.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

Placement::Placement(EtcdClient* etcd, std::string prefix)
    : etcd_(etcd), prefix_(std::move(prefix)) {}

absl::StatusOr<QueuePlacement> Placement::OwnerOf(const std::string& queue) const {
  auto got = etcd_->Get(Key(queue));
  if (!got.ok()) return got.status();
  if (!got->has_value()) {
    return absl::NotFoundError(absl::StrCat("queue \"", queue, "\" is not placed on any master"));
  }
  return QueuePlacement{queue, (*got)->value, (*got)->mod_revision};
}

absl::StatusOr<QueuePlacement> Placement::Claim(const std::string& queue,
                                                const std::string& owner) {
  EtcdKeyValue existing;
  auto created = etcd_->CreateIfAbsent(Key(queue), owner, 0, &existing);
  if (!created.ok()) return created.status();
  if (*created) return OwnerOf(queue);
  return QueuePlacement{queue, existing.value, existing.mod_revision};
}

absl::Status Placement::MoveAll(const std::vector<QueuePlacement>& from, const std::string& to) {
  std::vector<EtcdClient::Swap> swaps;
  swaps.reserve(from.size());
  for (const QueuePlacement& p : from) swaps.push_back({Key(p.queue), p.revision, to});
  auto swapped = etcd_->CompareAndSwapAll(swaps);
  if (!swapped.ok()) return swapped.status();
  if (!*swapped) {
    return absl::FailedPreconditionError(
        "a placement of the queues to move changed meanwhile; none was moved");
  }
  return absl::OkStatus();
}

absl::Status Placement::Forget(const std::string& queue) {
  auto deleted = etcd_->Delete(Key(queue));
  return deleted.ok() ? absl::OkStatus() : deleted.status();
}

absl::StatusOr<std::vector<QueuePlacement>> Placement::All() const {
  const std::string dir = prefix_ + "queues/";
  auto entries = etcd_->GetPrefix(dir);
  if (!entries.ok()) return entries.status();
  std::vector<QueuePlacement> out;
  out.reserve(entries->size());
  for (const EtcdKeyValue& kv : *entries) {
    out.push_back({kv.key.substr(dir.size()), kv.value, kv.mod_revision});
  }
  return out;
}

std::string Placement::Choose(const std::string& queue, const std::vector<MasterInfo>& masters) {
  std::string best;
  uint64_t best_score = 0;
  for (const MasterInfo& m : masters) {
    const uint64_t score = StableHash(queue, m.name);
    if (best.empty() || score > best_score || (score == best_score && m.name < best)) {
      best = m.name;
      best_score = score;
    }
  }
  return best;
}

}  // namespace taskq
