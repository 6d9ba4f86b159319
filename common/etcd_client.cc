#include "common/etcd_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace taskq {
namespace {

namespace pb = etcdserverpb;

// The end of the range of keys that start with `prefix` (etcd's
// convention: the prefix with its last byte below 0xff incremented).
std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdKeyValue FromProto(const mvccpb::KeyValue& kv) {
  return EtcdKeyValue{kv.key(), kv.value(), kv.mod_revision(), kv.lease()};
}

absl::Status Failed(const char* what, const grpc::Status& s) {
  absl::Status status = ToAbslStatus(s);
  return absl::Status(status.code(), absl::StrCat("etcd ", what, ": ", status.message()));
}

}  // namespace

EtcdClient::EtcdClient(EtcdOptions options) : options_(std::move(options)) {}
EtcdClient::~EtcdClient() = default;

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(EtcdOptions options) {
  if (options.endpoint.empty()) return absl::InvalidArgumentError("no etcd endpoint");
  std::unique_ptr<EtcdClient> self(new EtcdClient(std::move(options)));
  // Reconnect within at most 2 s of etcd coming back (gRPC's default
  // backoff grows to 2 minutes): a master waits on etcd for membership and
  // placement only.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  self->channel_ = grpc::CreateCustomChannel(self->options_.endpoint,
                                             grpc::InsecureChannelCredentials(), args);
  self->kv_ = pb::KV::NewStub(self->channel_);
  self->lease_ = pb::Lease::NewStub(self->channel_);
  return self;
}

void EtcdClient::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
}

absl::StatusOr<std::optional<EtcdKeyValue>> EtcdClient::Get(const std::string& key) {
  pb::RangeRequest request;
  request.set_key(key);
  pb::RangeResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->Range(&context, request, &response); !s.ok()) return Failed("get", s);
  if (response.kvs_size() == 0) return std::nullopt;
  return FromProto(response.kvs(0));
}

absl::StatusOr<std::vector<EtcdKeyValue>> EtcdClient::GetPrefix(const std::string& prefix,
                                                                int64_t limit) {
  pb::RangeRequest request;
  request.set_key(prefix.empty() ? std::string(1, '\0') : prefix);
  request.set_range_end(PrefixEnd(prefix));
  request.set_limit(limit);
  pb::RangeResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->Range(&context, request, &response); !s.ok()) {
    return Failed("range", s);
  }
  std::vector<EtcdKeyValue> out;
  out.reserve(response.kvs_size());
  for (const auto& kv : response.kvs()) out.push_back(FromProto(kv));
  return out;
}

absl::StatusOr<int64_t> EtcdClient::Put(const std::string& key, const std::string& value,
                                        int64_t lease) {
  pb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease);
  pb::PutResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->Put(&context, request, &response); !s.ok()) return Failed("put", s);
  return response.header().revision();
}

absl::StatusOr<bool> EtcdClient::CreateIfAbsent(const std::string& key, const std::string& value,
                                                int64_t lease, EtcdKeyValue* existing) {
  pb::TxnRequest request;
  pb::Compare* absent = request.add_compare();
  absent->set_key(key);
  absent->set_target(pb::Compare::CREATE);
  absent->set_result(pb::Compare::EQUAL);
  absent->set_create_revision(0);  // never created (or deleted since)
  pb::PutRequest* put = request.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  request.add_failure()->mutable_request_range()->set_key(key);
  pb::TxnResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->Txn(&context, request, &response); !s.ok()) return Failed("txn", s);
  if (response.succeeded()) return true;
  if (existing != nullptr && response.responses_size() > 0 &&
      response.responses(0).response_range().kvs_size() > 0) {
    *existing = FromProto(response.responses(0).response_range().kvs(0));
  }
  return false;
}

absl::StatusOr<bool> EtcdClient::CompareAndSwap(const std::string& key, int64_t mod_revision,
                                                const std::string& value, int64_t lease) {
  return CompareAndSwapAll({{key, mod_revision, value, lease}});
}

absl::StatusOr<bool> EtcdClient::CompareAndSwapAll(const std::vector<Swap>& swaps) {
  pb::TxnRequest request;
  for (const Swap& swap : swaps) {
    pb::Compare* same = request.add_compare();
    same->set_key(swap.key);
    same->set_target(pb::Compare::MOD);
    same->set_result(pb::Compare::EQUAL);
    same->set_mod_revision(swap.mod_revision);
    pb::PutRequest* put = request.add_success()->mutable_request_put();
    put->set_key(swap.key);
    put->set_value(swap.value);
    put->set_lease(swap.lease);
  }
  pb::TxnResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->Txn(&context, request, &response); !s.ok()) return Failed("txn", s);
  return response.succeeded();
}

absl::StatusOr<bool> EtcdClient::Delete(const std::string& key) {
  pb::DeleteRangeRequest request;
  request.set_key(key);
  pb::DeleteRangeResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = kv_->DeleteRange(&context, request, &response); !s.ok()) {
    return Failed("delete", s);
  }
  return response.deleted() > 0;
}

// --- leases ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<EtcdClient::Lease>> EtcdClient::GrantLease(
    absl::Duration ttl, std::function<void()> on_lost) {
  const int64_t seconds = std::max<int64_t>(1, absl::ToInt64Seconds(ttl));
  pb::LeaseGrantRequest request;
  request.set_ttl(seconds);
  pb::LeaseGrantResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  if (grpc::Status s = lease_->LeaseGrant(&context, request, &response); !s.ok()) {
    return Failed("lease grant", s);
  }
  if (!response.error().empty()) {
    return absl::UnavailableError(absl::StrCat("etcd lease grant: ", response.error()));
  }
  return std::unique_ptr<Lease>(
      new Lease(this, response.id(), absl::Seconds(response.ttl()), std::move(on_lost)));
}

absl::StatusOr<int64_t> EtcdClient::RenewOnce(int64_t lease) {
  // One request on a stream of its own: simple, and a renewal every TTL/3
  // costs nothing worth a long-lived stream's bookkeeping.
  grpc::ClientContext context;
  Prepare(&context);
  auto stream = lease_->LeaseKeepAlive(&context);
  pb::LeaseKeepAliveRequest request;
  request.set_id(lease);
  pb::LeaseKeepAliveResponse response;
  if (!stream->Write(request) || !stream->WritesDone() || !stream->Read(&response)) {
    return Failed("lease keep-alive", stream->Finish());
  }
  context.TryCancel();  // the stream's end is of no interest
  stream->Finish();
  return response.ttl();
}

absl::Status EtcdClient::Revoke(int64_t lease) {
  pb::LeaseRevokeRequest request;
  request.set_id(lease);
  pb::LeaseRevokeResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  grpc::Status s = lease_->LeaseRevoke(&context, request, &response);
  return s.ok() ? absl::OkStatus() : Failed("lease revoke", s);
}

EtcdClient::Lease::Lease(EtcdClient* client, int64_t id, absl::Duration ttl,
                         std::function<void()> on_lost)
    : client_(client), id_(id), ttl_(ttl), on_lost_(std::move(on_lost)) {
  thread_ = std::thread([this] { KeepAlive(); });
}

EtcdClient::Lease::~Lease() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
  if (!lost()) {
    if (absl::Status s = client_->Revoke(id_); !s.ok()) {
      LogWarning("cannot revoke etcd lease %x (its keys go when its TTL runs out): %s", id_,
                 s.message());
    }
  }
}

bool EtcdClient::Lease::lost() const {
  MutexLock lock(&mu_);
  return lost_;
}

void EtcdClient::Lease::KeepAlive() {
  absl::Time renewed = absl::Now();
  for (;;) {
    {
      MutexLock lock(&mu_);
      const absl::Time next = absl::Now() + ttl_ / 3;
      while (!stop_ && !cv_.WaitWithDeadline(&mu_, next)) {
      }
      if (stop_) return;
    }
    auto ttl = client_->RenewOnce(id_);
    if (ttl.ok() && *ttl > 0) {
      renewed = absl::Now();
      continue;
    }
    // Gone (TTL 0: etcd forgot it) or not renewed for a whole TTL: etcd
    // has dropped it, with every key attached.
    if ((ttl.ok() && *ttl <= 0) || absl::Now() - renewed >= ttl_) {
      LogWarning("etcd lease %x lost: %s", id_,
                 ttl.ok() ? "expired on etcd" : std::string(ttl.status().message()));
      {
        MutexLock lock(&mu_);
        lost_ = true;
      }
      if (on_lost_) on_lost_();
      return;
    }
  }
}

}  // namespace taskq
