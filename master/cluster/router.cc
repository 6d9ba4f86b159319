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
        LogWarning("cluster: queue \"%s\" is in this master's store but placed on \"%s\" in "
                   "etcd; this master keeps serving its copy",
                   q, owner);
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
    if (owned_.contains(queue)) return absl::OkStatus();
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
  auto owner = Resolve(queue, place == Place::kYes, target);
  if (!owner.ok()) return owner.status();
  if (owner->empty()) return absl::OkStatus();
  return RouteTo(queue, *owner);
}

absl::Status QueueRouter::ForTask(uint64_t task_id) {
  const uint32_t node = NodeOfTask(task_id);
  if (node == 0 || node == options_.node) return absl::OkStatus();
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

}  // namespace taskq
