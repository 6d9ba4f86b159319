#include "master/cluster/router.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/cluster_redirect.h"
#include "common/log.h"
#include "master/cluster/node_number.h"

namespace taskq {
absl::Status RedirectToMaster(const std::string& queue, const MasterInfo& to, bool moving) {
  v1::QueueOwner entry;
  entry.set_queue(queue);
  entry.set_master(to.name);
  entry.set_address(to.address);
  entry.set_moving(moving);
  return RedirectStatus(entry);
}

namespace {


absl::Status CannotPlace(const std::string& queue, const absl::Status& why) {
  return absl::UnavailableError(absl::StrCat("cannot place queue \"", queue,
                                             "\": cluster store unreachable (", why.message(),
                                             ")"));
}

}  // namespace

QueueRouter::QueueRouter(EtcdClient* etcd, QueueRouterOptions options)
    : etcd_(etcd), options_(std::move(options)), placement_(etcd, options_.prefix) {}

QueueRouter::~QueueRouter() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (refresher_.joinable()) refresher_.join();
}

void QueueRouter::Start(const std::vector<std::string>& local_queues) {
  {
    MutexLock lock(&mu_);
    owned_.insert(local_queues.begin(), local_queues.end());
  }
  if (Refresh()) {
    // A queue in the local store is this master's: claim those etcd does
    // not know (a data dir that served alone before, or a wiped etcd).
    size_t claimed = 0;
    for (const std::string& q : local_queues) {
      std::string owner;
      {
        MutexLock lock(&mu_);
        auto it = others_.find(q);
        if (it != others_.end()) owner = it->second;
      }
      if (!owner.empty()) {
        // A move that switched owner while this master was down (its copy
        // was to be dropped), or a data dir that served alone before.
        LogWarning("cluster: queue \"%s\" is in this master's store but placed on \"%s\" in "
                   "etcd: served there, not here; this master's copy stays in its store "
                   "untouched (docs/CLUSTER.md, \"Moving a queue\")",
                   q, owner);
        MutexLock lock(&mu_);
        owned_.erase(q);
        continue;
      }
      auto claim = placement_.Claim(q, self());
      if (claim.ok() && claim->owner == self()) ++claimed;
    }
    if (claimed > 0) LogInfo("cluster: %d local queues placed on this master in etcd", claimed);
  } else {
    LogWarning("cluster: etcd unreachable at start; serving the %d queues of the local store",
               local_queues.size());
  }
  refresher_ = std::thread([this] { RefreshLoop(); });
}

void QueueRouter::RefreshLoop() {
  bool was_reachable = true;
  MutexLock lock(&mu_);
  while (!stop_) {
    cv_.WaitWithTimeout(&mu_, options_.refresh);
    if (stop_) break;
    mu_.Unlock();
    const bool reachable = Refresh();
    if (reachable != was_reachable) {
      if (reachable) {
        LogInfo("cluster: etcd answers again");
      } else {
        LogWarning("cluster: etcd unreachable: serving owned queues, placing none");
      }
      was_reachable = reachable;
    }
    mu_.Lock();
  }
}

bool QueueRouter::Refresh() {
  uint64_t forgets_before = 0;
  {
    MutexLock lock(&mu_);
    forgets_before = forgets_;
  }
  auto placements = placement_.All();
  if (!placements.ok()) return false;
  auto masters = etcd_->GetPrefix(options_.prefix + "masters/");
  if (!masters.ok()) return false;
  const std::string nodes_dir = options_.prefix + "nodes/";
  auto nodes = etcd_->GetPrefix(nodes_dir);
  if (!nodes.ok()) return false;

  absl::flat_hash_map<std::string, std::string> others;
  std::vector<std::string> mine;
  for (QueuePlacement& p : *placements) {
    if (p.owner == self()) {
      mine.push_back(std::move(p.queue));
    } else {
      others.emplace(std::move(p.queue), std::move(p.owner));
    }
  }
  absl::flat_hash_map<std::string, MasterInfo> live;
  const std::string masters_dir = options_.prefix + "masters/";
  for (const EtcdKeyValue& kv : *masters) {
    MasterInfo m = Membership::Decode(kv.key.substr(masters_dir.size()), kv.value);
    live.emplace(m.name, std::move(m));
  }
  absl::flat_hash_map<uint32_t, std::string> node_names;
  for (const EtcdKeyValue& kv : *nodes) {
    uint32_t n = 0;
    if (absl::SimpleAtoi(absl::string_view(kv.key).substr(nodes_dir.size()), &n)) {
      node_names.emplace(n, kv.value);
    }
  }
  MutexLock lock(&mu_);
  // A local queue stays owned whatever etcd says (it is served from this
  // store; it is forgotten only when deleted here).
  for (const std::string& q : owned_) others.erase(q);
  if (forgets_ == forgets_before) owned_.insert(mine.begin(), mine.end());
  others_ = std::move(others);
  live_ = std::move(live);
  nodes_ = std::move(node_names);
  return true;
}

v1::QueueOwner QueueRouter::OwnerEntry(const std::string& owner) const {
  v1::QueueOwner entry;
  entry.set_master(owner);
  auto it = live_.find(owner);
  if (it == live_.end()) {
    entry.set_down(true);
  } else {
    entry.set_address(it->second.address);
  }
  return entry;
}

absl::Status QueueRouter::RouteTo(const std::string& queue, const std::string& owner) {
  MutexLock lock(&mu_);
  if (owner == self()) return absl::OkStatus();
  v1::QueueOwner entry = OwnerEntry(owner);
  entry.set_queue(queue);
  return RedirectStatus(entry);
}

void QueueRouter::Record(const std::string& queue, const std::string& owner) {
  MutexLock lock(&mu_);
  if (owner == self()) {
    owned_.insert(queue);
    others_.erase(queue);
  } else if (!owned_.contains(queue)) {
    others_[queue] = owner;
  }
}

std::vector<MasterInfo> QueueRouter::LiveMasters() const {
  MutexLock lock(&mu_);
  std::vector<MasterInfo> out;
  out.reserve(live_.size() + 1);
  bool self_listed = false;
  for (const auto& [name, m] : live_) {
    out.push_back(m);
    self_listed |= name == self();
  }
  // This master is up (it is answering), registered or not.
  if (!self_listed) out.push_back(options_.self);
  return out;
}

absl::StatusOr<std::string> QueueRouter::Resolve(const std::string& queue, bool place,
                                                 const std::string& target) {
  auto found = placement_.OwnerOf(queue);
  if (found.ok()) {
    Record(queue, found->owner);
    return found->owner;
  }
  if (!absl::IsNotFound(found.status())) {
    if (!place) return std::string();  // the engine answers (e.g. NOT_FOUND)
    return CannotPlace(queue, found.status());
  }
  if (!place) return std::string();
  auto claimed = placement_.Claim(queue, target);
  if (!claimed.ok()) return CannotPlace(queue, claimed.status());
  Record(queue, claimed->owner);
  if (claimed->owner == target) {
    LogInfo("cluster: queue \"%s\" placed on %s", queue, target);
  }
  return claimed->owner;
}

absl::Status QueueRouter::ForQueue(const std::string& queue, Place place, const std::string& on) {
  {
    MutexLock lock(&mu_);
    if (owned_.contains(queue)) {
      auto it = moving_.find(queue);
      if (it == moving_.end()) return absl::OkStatus();
      return RedirectToMaster(queue, it->second, /*moving=*/true);
    }
    auto it = others_.find(queue);
    if (it != others_.end()) {
      v1::QueueOwner entry = OwnerEntry(it->second);
      entry.set_queue(queue);
      return RedirectStatus(entry);
    }
  }
  std::string target = on;
  const std::vector<MasterInfo> masters = LiveMasters();
  if (!target.empty()) {
    if (std::none_of(masters.begin(), masters.end(),
                     [&](const MasterInfo& m) { return m.name == target; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot place queue \"", queue, "\" on \"", target,
                       "\": no master of that name is up (see `taskq cluster status`)"));
    }
  } else {
    target = Placement::Choose(queue, masters);
  }
  const bool may_place =
      place == Place::kYes || (place == Place::kOnUse && options_.place_on_use);
  auto owner = Resolve(queue, may_place, target);
  if (!owner.ok()) return owner.status();
  if (owner->empty()) return absl::OkStatus();
  return RouteTo(queue, *owner);
}

absl::Status QueueRouter::ForTask(uint64_t task_id) {
  const uint32_t node = NodeOfTask(task_id);
  if (node == options_.node) {
    std::string queue;
    {
      MutexLock lock(&mu_);
      if (moved_tasks_.empty()) return absl::OkStatus();
      auto it = moved_tasks_.find(task_id);
      if (it == moved_tasks_.end()) return absl::OkStatus();
      queue = moves_[it->second];
    }
    // Moved away with its queue: wherever the queue is now.
    absl::Status s = ForQueue(queue, Place::kNo);
    if (s.ok()) return s;
    std::optional<v1::QueueOwner> owner = QueueOwnerOf(s);
    if (!owner.has_value()) return s;
    owner->set_queue("");
    owner->set_task_id(task_id);
    return RedirectStatus(*owner);
  }
  if (node == 0) return absl::OkStatus();
  MutexLock lock(&mu_);
  auto it = nodes_.find(node);
  // An unknown node: no master made it; the engine answers NOT_FOUND.
  if (it == nodes_.end()) return absl::OkStatus();
  v1::QueueOwner entry = OwnerEntry(it->second);
  entry.set_task_id(task_id);
  return RedirectStatus(entry);
}

absl::Status QueueRouter::ForSameMaster(const std::string& queue, const std::string& reply_to,
                                        const char* what) {
  std::string owner;
  {
    MutexLock lock(&mu_);
    if (auto it = moving_.find(reply_to); it != moving_.end()) {
      // Tying a queue to one that is leaving would strand what it sends.
      return RedirectToMaster(reply_to, it->second, /*moving=*/true);
    }
    if (owned_.contains(reply_to)) return absl::OkStatus();
    auto it = others_.find(reply_to);
    if (it != others_.end()) owner = it->second;
  }
  if (owner.empty()) {
    // Not placed yet (as far as the cache knows): what this master's
    // queue sends there is stored here, so it is placed here.
    auto resolved = Resolve(reply_to, true, self());
    if (!resolved.ok()) return resolved.status();
    owner = *resolved;
  }
  if (owner == self()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " queue \"", reply_to, "\" is on master \"", owner, "\" but queue \"", queue,
      "\" is on master \"", self(), "\": a queue's ", what, " must be a queue on the same master "
      "(use one placed on \"", self(), "\", or one not used yet; docs/CLUSTER.md)"));
}

void QueueRouter::Forget(const std::string& queue) {
  // etcd first: a refresh that read the placement before it went started
  // before the count below changed, and does not take the queue back.
  if (absl::Status s = placement_.Forget(queue); !s.ok()) {
    LogWarning("cluster: queue \"%s\" deleted, but its placement stays in etcd: %s", queue,
               s.message());
  }
  MutexLock lock(&mu_);
  owned_.erase(queue);
  ++forgets_;
}

v1::GetClusterResponse QueueRouter::Describe() const {
  v1::GetClusterResponse out;
  out.set_clustered(true);
  out.set_self(self());
  MutexLock lock(&mu_);
  std::map<std::string, v1::ClusterMaster> masters;  // by name
  auto master = [&](const std::string& name) -> v1::ClusterMaster& {
    v1::ClusterMaster& m = masters[name];
    m.set_name(name);
    return m;
  };
  for (const auto& [name, info] : live_) {
    v1::ClusterMaster& m = master(name);
    m.set_address(info.address);
    m.set_started_unix_ms(info.started_unix_ms);
    m.set_up(true);
  }
  v1::ClusterMaster& me = master(self());
  me.set_up(true);
  if (me.address().empty()) me.set_address(options_.self.address);
  if (me.started_unix_ms() == 0) me.set_started_unix_ms(options_.self.started_unix_ms);
  std::map<std::string, std::string> placements;
  for (const std::string& q : owned_) placements.emplace(q, self());
  for (const auto& [q, owner] : others_) placements.emplace(q, owner);
  for (const auto& [q, owner] : placements) {
    v1::ClusterMaster& m = master(owner);
    m.set_queues(m.queues() + 1);
    v1::ClusterPlacement* p = out.add_placements();
    p->set_queue(q);
    p->set_master(owner);
  }
  for (const auto& [node, name] : nodes_) {
    auto it = masters.find(name);
    if (it != masters.end()) it->second.set_node(node);
  }
  me.set_node(options_.node);
  for (auto& [name, m] : masters) *out.add_masters() = std::move(m);
  return out;
}


// --- moving queues -------------------------------------------------------------------

absl::StatusOr<std::string> QueueRouter::OwnerInEtcd(const std::string& queue) const {
  auto found = placement_.OwnerOf(queue);
  if (!found.ok()) return found.status();
  return found->owner;
}

bool QueueRouter::Owns(const std::string& queue) const {
  MutexLock lock(&mu_);
  return owned_.contains(queue);
}

absl::StatusOr<MasterInfo> QueueRouter::LiveMaster(const std::string& name) const {
  MutexLock lock(&mu_);
  auto it = live_.find(name);
  if (it == live_.end()) {
    return absl::NotFoundError(absl::StrCat("no master named \"", name,
                                            "\" is up (see `taskq cluster status`)"));
  }
  return it->second;
}

absl::StatusOr<std::vector<QueuePlacement>> QueueRouter::BeginMove(
    const std::vector<std::string>& group, const MasterInfo& to) {
  std::vector<QueuePlacement> placements;
  for (const std::string& queue : group) {
    auto found = placement_.OwnerOf(queue);
    if (absl::IsNotFound(found.status())) continue;  // never placed: nothing to switch
    if (!found.ok()) return found.status();
    if (found->owner != self()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "queue \"", queue, "\" is tied to the queue to move but placed on master \"",
          found->owner, "\", not on \"", self(), "\""));
    }
    placements.push_back(*std::move(found));
  }
  MutexLock lock(&mu_);
  for (const std::string& queue : group) {
    if (moving_.contains(queue)) {
      return absl::FailedPreconditionError(
          absl::StrCat("queue \"", queue, "\" is being moved already"));
    }
  }
  for (const QueuePlacement& p : placements) {
    owned_.insert(p.queue);
    moving_[p.queue] = to;
  }
  return placements;
}

absl::Status QueueRouter::SwitchOwner(const std::vector<QueuePlacement>& placements,
                                      const std::string& to) {
  return placement_.MoveAll(placements, to);
}

void QueueRouter::EndMove(const std::vector<std::string>& group, const std::string& to,
                          bool moved, const std::vector<uint64_t>& task_ids) {
  MutexLock lock(&mu_);
  for (const std::string& queue : group) {
    auto it = moving_.find(queue);
    if (it == moving_.end()) continue;
    moving_.erase(it);
    if (moved) {
      owned_.erase(queue);
      others_[queue] = to;
    }
  }
  if (!moved || group.empty()) return;
  // Calls by id follow the group: one queue of it stands for all (they
  // moved together, to one master).
  const uint32_t move = static_cast<uint32_t>(moves_.size());
  moves_.push_back(group.front());
  for (uint64_t id : task_ids) {
    if (NodeOfTask(id) != options_.node) continue;  // made elsewhere: its node knows
    moved_tasks_[id] = move;
  }
}

absl::Status QueueRouter::Adopt(const std::vector<std::string>& queues) {
  for (const std::string& queue : queues) {
    auto found = placement_.OwnerOf(queue);
    if (absl::IsNotFound(found.status())) continue;
    if (!found.ok()) return found.status();
    if (found->owner != self()) {
      return absl::FailedPreconditionError(
          absl::StrCat("queue \"", queue, "\" is placed on master \"", found->owner,
                       "\" in etcd, not on \"", self(), "\": not adopted"));
    }
  }
  MutexLock lock(&mu_);
  for (const std::string& queue : queues) {
    owned_.insert(queue);
    others_.erase(queue);
  }
  return absl::OkStatus();
}

}  // namespace taskq
