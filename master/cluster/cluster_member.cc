#include "master/cluster/cluster_member.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "master/cluster/node_number.h"

namespace taskq {
namespace {

constexpr char kScheme[] = "etcd://";

bool IsIpv4(absl::string_view host) {
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

}  // namespace

absl::StatusOr<std::string> EtcdTarget(const std::string& url) {
  auto bad = [&url](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--cluster \"", url, "\": ", why,
                                                   " (expected etcd://HOST:PORT[,HOST:PORT...])"));
  };
  if (!absl::StartsWith(url, kScheme)) return bad("not an etcd:// URL");
  std::vector<std::string> endpoints =
      absl::StrSplit(absl::string_view(url).substr(sizeof(kScheme) - 1), ',', absl::SkipEmpty());
  if (endpoints.empty()) return bad("no etcd endpoint");
  for (std::string& e : endpoints) {
    if (absl::StartsWith(e, kScheme)) e = e.substr(sizeof(kScheme) - 1);
    const size_t colon = e.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == e.size()) {
      return bad(absl::StrCat("\"", e, "\" has no HOST:PORT"));
    }
  }
  if (endpoints.size() == 1) return endpoints.front();
  const bool all_ipv4 = std::all_of(endpoints.begin(), endpoints.end(), [](const std::string& e) {
    return IsIpv4(absl::string_view(e).substr(0, e.rfind(':')));
  });
  if (all_ipv4) return absl::StrCat("ipv4:", absl::StrJoin(endpoints, ","));
  LogWarning("cluster: several etcd endpoints fail over only when all are IPv4 addresses; "
             "using %s alone",
             endpoints.front());
  return endpoints.front();
}

bool ParseClusterTtl(const std::string& text, absl::Duration* ttl) {
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    *ttl = absl::Seconds(seconds);
    return true;
  }
  return absl::ParseDuration(text, ttl);
}

absl::Status ValidateClusterOptions(ClusterOptions& options) {
  if (options.etcd.empty()) return absl::OkStatus();
  if (auto target = EtcdTarget(options.etcd); !target.ok()) return target.status();
  if (options.advertise.empty()) {
    return absl::InvalidArgumentError(
        "--cluster needs --advertise HOST:PORT: the address other masters send clients and "
        "workers to for this master's queues");
  }
  const size_t colon = options.advertise.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == options.advertise.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--advertise \"", options.advertise, "\" is not HOST:PORT"));
  }
  if (options.name.empty()) options.name = Hostname();
  if (options.name.empty() || options.name.find('/') != std::string::npos ||
      options.name.size() > 253) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--name \"", options.name, "\": give each master a name (no '/', at most 253 bytes)"));
  }
  if (options.prefix.empty() || options.prefix.back() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--cluster-prefix \"", options.prefix, "\" must end with '/'"));
  }
  if (options.ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--cluster-ttl must be at least 1s");
  }
  if (!options.peer_ca_file.empty() && ::access(options.peer_ca_file.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cluster-ca \"", options.peer_ca_file, "\" cannot be read: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ClusterMember>> ClusterMember::Start(ClusterOptions options,
                                                                    const std::string& data_dir) {
  if (absl::Status s = ValidateClusterOptions(options); !s.ok()) return s;
  auto target = EtcdTarget(options.etcd);
  if (!target.ok()) return target.status();
  auto etcd = EtcdClient::Connect({.endpoint = *target, .call_timeout = absl::Seconds(3)});
  if (!etcd.ok()) return etcd.status();
  const bool remembered = RememberedNode(data_dir).ok();
  auto node = ObtainNode(etcd->get(), options.prefix, options.name, data_dir);
  if (!node.ok()) {
    if (absl::IsUnavailable(node.status()) || absl::IsDeadlineExceeded(node.status())) {
      return absl::UnavailableError(absl::StrCat(
          "cannot join the cluster at ", options.etcd, ": etcd does not answer and this master "
          "has no node number yet (", data_dir, "/cluster-node): it needs etcd once to get one (",
          node.status().message(), ")"));
    }
    return node.status();
  }
  std::unique_ptr<ClusterMember> member(
      new ClusterMember(std::move(options), *std::move(etcd), *node));
  MasterInfo self{member->options_.name, member->options_.advertise, absl::ToUnixMillis(absl::Now())};
  auto joined = Membership::Join(member->etcd_.get(), member->options_.prefix, self,
                                 member->options_.ttl);
  if (joined.ok()) {
    MutexLock lock(&member->mu_);
    member->membership_ = *std::move(joined);
  } else if (absl::IsFailedPrecondition(joined.status()) && !remembered) {
    // A new master under a name a live one holds.
    return joined.status();
  } else {
    // etcd away, or this data dir's own entry from before a crash not yet
    // expired: serve, and join once it can.
    LogWarning("cluster: not registered yet (%s); serving this master's queues and retrying",
               joined.status().message());
    member->joiner_ = std::thread([m = member.get(), self] { m->JoinLoop(self); });
  }
  LogInfo("cluster: master \"%s\" (node %d) at %s, etcd %s, prefix %s, ttl %s",
          member->options_.name, member->node_, member->options_.advertise,
          member->options_.etcd, member->options_.prefix,
          absl::FormatDuration(member->options_.ttl));
  return member;
}

ClusterMember::ClusterMember(ClusterOptions options, std::unique_ptr<EtcdClient> etcd,
                             uint32_t node)
    : options_(std::move(options)), etcd_(std::move(etcd)), node_(node) {
  QueueRouterOptions router;
  router.prefix = options_.prefix;
  router.self = {options_.name, options_.advertise, absl::ToUnixMillis(absl::Now())};
  router.node = node_;
  router.place_on_use = options_.place_on_use;
  router_ = std::make_unique<QueueRouter>(etcd_.get(), std::move(router));
}

void ClusterMember::JoinLoop(MasterInfo self) {
  for (int attempt = 1;; ++attempt) {
    {
      MutexLock lock(&mu_);
      cv_.WaitWithTimeout(&mu_, std::min(absl::Seconds(attempt), absl::Seconds(3)));
      if (stop_) return;
    }
    auto joined = Membership::Join(etcd_.get(), options_.prefix, self, options_.ttl);
    if (joined.ok()) {
      LogInfo("cluster: registered in etcd as \"%s\"", self.name);
      MutexLock lock(&mu_);
      membership_ = *std::move(joined);
      return;
    }
    if (attempt % 20 == 0) LogWarning("cluster: still not registered: %s", joined.status().message());
  }
}

bool ClusterMember::joined() const {
  MutexLock lock(&mu_);
  return membership_ != nullptr && membership_->registered();
}

void ClusterMember::Leave() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (joiner_.joinable()) joiner_.join();
  std::unique_ptr<Membership> membership;
  {
    MutexLock lock(&mu_);
    membership = std::move(membership_);
  }
  membership.reset();  // revokes its lease
}

ClusterMember::~ClusterMember() {
  Leave();
  router_.reset();
}

}  // namespace taskq
