#include "master/cluster/membership.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"

namespace taskq {

std::string Membership::Encode(const MasterInfo& m) {
  return absl::StrCat(m.address, "\n", m.started_unix_ms);
}

MasterInfo Membership::Decode(const std::string& name, const std::string& value) {
  MasterInfo m;
  m.name = name;
  std::pair<std::string, std::string> parts = absl::StrSplit(value, absl::MaxSplits('\n', 1));
  m.address = parts.first;
  if (!absl::SimpleAtoi(parts.second, &m.started_unix_ms)) m.started_unix_ms = 0;
  return m;
}

Membership::Membership(EtcdClient* etcd, std::string prefix, MasterInfo self, absl::Duration ttl)
    : etcd_(etcd), prefix_(std::move(prefix)), self_(std::move(self)), ttl_(ttl) {}

absl::StatusOr<std::unique_ptr<Membership>> Membership::Join(EtcdClient* etcd, std::string prefix,
                                                             MasterInfo self,
                                                             absl::Duration ttl) {
  std::unique_ptr<Membership> m(new Membership(etcd, std::move(prefix), std::move(self), ttl));
  if (absl::Status s = m->Register(); !s.ok()) return s;
  m->rejoiner_ = std::thread([p = m.get()] { p->Rejoin(); });
  return m;
}

absl::Status Membership::Register() {
  auto lease = etcd_->GrantLease(ttl_, [this] {
    {
      MutexLock lock(&mu_);
      lost_ = true;
    }
    cv_.SignalAll();
  });
  if (!lease.ok()) return lease.status();
  EtcdKeyValue existing;
  auto created = etcd_->CreateIfAbsent(Key(), Encode(self_), (*lease)->id(), &existing);
  if (!created.ok()) return created.status();
  if (!*created && existing.value == Encode(self_)) {
    // Our own entry from before the lease was lost (etcd has not expired
    // it yet): move it to the new lease.
    auto swapped = etcd_->CompareAndSwap(Key(), existing.mod_revision, Encode(self_),
                                         (*lease)->id());
    if (!swapped.ok()) return swapped.status();
    created = *swapped;
  }
  if (!*created) {
    const MasterInfo other = Decode(self_.name, existing.value);
    return absl::FailedPreconditionError(absl::StrCat(
        "master name \"", self_.name, "\" is taken in the cluster by the master at ",
        other.address, " (started ", absl::FormatTime(absl::FromUnixMillis(other.started_unix_ms)),
        "); give this one another --name, or stop that one first"));
  }
  std::unique_ptr<EtcdClient::Lease> old;  // a lost one: destroyed unlocked
  {
    MutexLock lock(&mu_);
    old = std::move(lease_);
    lease_ = *std::move(lease);
    lost_ = false;
  }
  return absl::OkStatus();
}

void Membership::Rejoin() {
  for (;;) {
    {
      MutexLock lock(&mu_);
      while (!leaving_ && !lost_) cv_.Wait(&mu_);
      if (leaving_) return;
    }
    LogWarning("cluster: this master's etcd entry was lost (etcd unreachable longer than %s); "
               "it keeps serving its queues and registers again once etcd answers",
               absl::FormatDuration(ttl_));
    for (int attempt = 0;; ++attempt) {
      {
        MutexLock lock(&mu_);
        cv_.WaitWithTimeout(&mu_, std::min(absl::Seconds(1) * (attempt + 1), absl::Seconds(5)));
        if (leaving_) return;
      }
      absl::Status s = Register();
      if (s.ok()) {
        LogInfo("cluster: registered again in etcd as \"%s\"", self_.name);
        break;
      }
      if (absl::IsFailedPrecondition(s)) {
        // Our old entry still there (its lease not expired yet on etcd's
        // side), or a new master took the name: keep trying; the first
        // goes by itself.
        if (attempt % 10 == 0) LogWarning("cluster: %s", s.message());
      }
    }
  }
}

Membership::~Membership() {
  {
    MutexLock lock(&mu_);
    leaving_ = true;
  }
  cv_.SignalAll();
  if (rejoiner_.joinable()) rejoiner_.join();
  std::unique_ptr<EtcdClient::Lease> lease;
  {
    MutexLock lock(&mu_);
    lease = std::move(lease_);
  }
  lease.reset();  // revokes: the entry goes now
}

bool Membership::registered() const {
  MutexLock lock(&mu_);
  return lease_ != nullptr && !lost_;
}

absl::StatusOr<std::vector<MasterInfo>> Membership::Masters() const {
  const std::string dir = prefix_ + "masters/";
  auto entries = etcd_->GetPrefix(dir);
  if (!entries.ok()) return entries.status();
  std::vector<MasterInfo> out;
  out.reserve(entries->size());
  for (const EtcdKeyValue& kv : *entries) {
    out.push_back(Decode(kv.key.substr(dir.size()), kv.value));
  }
  return out;
}

}  // namespace taskq
