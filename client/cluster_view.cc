#include "client/cluster_view.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"

namespace taskq::cli {
namespace {

constexpr absl::Duration kPerMasterTimeout = absl::Seconds(5);

}  // namespace

absl::StatusOr<ClusterView> LoadClusterView(Client& client, uint32_t page_size) {
  auto cluster = client.GetCluster();
  if (!cluster.ok()) return cluster.status();
  ClusterView view;
  view.clustered = cluster->clustered();
  view.self = cluster->self();
  if (!view.clustered) {
    MasterView one;
    one.master.set_address(client.address());
    one.master.set_up(true);
    one.queues = client.ListQueues(page_size);
    if (!one.queues.ok()) return one.queues.status();
    one.master.set_queues(static_cast<uint32_t>(one.queues->size()));
    view.masters.push_back(std::move(one));
  } else {
    for (const v1::ClusterMaster& master : cluster->masters()) {
      MasterView entry;
      entry.master = master;
      if (!master.up() || master.address().empty()) {
        entry.queues = absl::UnavailableError(absl::StrCat("master ", master.name(), " is down"));
      } else {
        // Registered but maybe just killed (its lease not lapsed yet): a
        // few seconds of retrying, not the caller's whole --retry-for.
        entry.queues = client.At(master.address())
                           ->WithOptions({.call_timeout = kPerMasterTimeout})
                           ->ListQueues(page_size);
      }
      view.masters.push_back(std::move(entry));
    }
    std::sort(view.masters.begin(), view.masters.end(),
              [](const MasterView& a, const MasterView& b) {
                return a.master.name() < b.master.name();
              });
  }
  for (MasterView& entry : view.masters) {
    if (!entry.queues.ok()) continue;
    std::sort(entry.queues->begin(), entry.queues->end(),
              [](const v1::QueueStats& a, const v1::QueueStats& b) {
                return a.config().name() < b.config().name();
              });
  }
  return view;
}

}  // namespace taskq::cli
