#include "master/keda_service.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "master/roles.h"
#include "master/token_auth.h"

namespace taskq {

// One StreamIsActive call. Writes the answer when it differs from the last
// one written; at most one write in flight, and Finish only once, after
// it. Its owners are gRPC (until OnDone) and the poller while it polls it
// (refs_).
class KedaService::ActiveStream final
    : public grpc::ServerWriteReactor<externalscaler::IsActiveResponse> {
 public:
  ActiveStream(KedaService* service, KedaQuery query)
      : service_(service), query_(std::move(query)) {}

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Sends the current answer if it changed; an engine error ends the stream.
  void Poll() {
    absl::StatusOr<bool> active = service_->Active(query_);
    if (!active.ok()) {
      End(ToGrpcStatus(active.status()));
      return;
    }
    {
      MutexLock lock(&mu_);
      if (ended_ || end_after_write_ || writing_ || sent_ == *active) return;
      sent_ = *active;
      writing_ = true;
      out_.set_result(*active);
    }
    StartWrite(&out_);
  }

  void End(grpc::Status status) {
    {
      MutexLock lock(&mu_);
      if (ended_ || end_after_write_) return;
      if (writing_) {
        end_after_write_ = std::move(status);
        return;
      }
      ended_ = true;
    }
    Finish(std::move(status));
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      MutexLock lock(&mu_);
      writing_ = false;
      if (end_after_write_) {
        finish = std::move(end_after_write_);
        end_after_write_.reset();
      } else if (!ok) {
        finish = grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke");
      }
      if (finish) ended_ = true;
    }
    if (finish) Finish(std::move(*finish));
  }

  void OnCancel() override {
    End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }

  void OnDone() override {
    service_->Remove(this);
    Unref();
  }

 private:
  KedaService* const service_;
  const KedaQuery query_;
  std::atomic<int> refs_{1};
  Mutex mu_;
  std::optional<bool> sent_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> end_after_write_ ABSL_GUARDED_BY(mu_);
  externalscaler::IsActiveResponse out_;  // changed only while no write is in flight
};

namespace {

// A StreamIsActive refused before it started.
class RefusedStream final : public grpc::ServerWriteReactor<externalscaler::IsActiveResponse> {
 public:
  explicit RefusedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

KedaService::KedaService(QueueEngine* engine, const CredentialTable* credentials,
                         KedaServiceOptions options)
    : engine_(engine), credentials_(credentials), options_(options) {
  poller_ = std::thread([this] { PollLoop(); });
}

KedaService::~KedaService() { Shutdown(); }

void KedaService::Shutdown() {
  std::vector<ActiveStream*> streams;
  {
    MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    wake_.SignalAll();
    for (ActiveStream* s : streams_) {
      s->Ref();
      streams.push_back(s);
    }
  }
  poller_.join();
  for (ActiveStream* s : streams) {
    s->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the master is shutting down"));
    s->Unref();
  }
}

void KedaService::PollLoop() {
  while (true) {
    std::vector<ActiveStream*> streams;
    {
      MutexLock lock(&mu_);
      if (!shutting_down_) wake_.WaitWithTimeout(&mu_, options_.poll_interval);
      if (shutting_down_) return;
      for (ActiveStream* s : streams_) {
        s->Ref();
        streams.push_back(s);
      }
    }
    // Outside mu_: a stream's OnDone (Remove) must never wait on a poll.
    for (ActiveStream* s : streams) {
      s->Poll();
      s->Unref();
    }
  }
}

void KedaService::Remove(ActiveStream* stream) {
  MutexLock lock(&mu_);
  streams_.erase(stream);
}

absl::StatusOr<KedaQuery> KedaService::Admit(grpc::CallbackServerContext* context,
                                             const externalscaler::ScaledObjectRef& ref) {
  std::optional<Principal> who;
  if (credentials_ != nullptr) {
    auto found = AuthenticateCall(*credentials_, context->client_metadata(),
                                  context->auth_context().get());
    if (!found.ok()) return found.status();
    who = *std::move(found);
  }
  auto query = ParseKedaMetadata(ref.scalermetadata());
  if (!query.ok()) return query.status();
  if (who) {
    std::vector<QueueRef> queues;
    for (const std::string& name : query->queues) {
      auto owner = engine_->QueueOwner(name);
      queues.push_back({name, owner.ok() ? *owner : std::string()});
    }
    if (absl::Status s = Authorize(*who, *FindRule("GetQueueStats"), queues); !s.ok()) {
      return s;
    }
  }
  return query;
}

absl::StatusOr<bool> KedaService::Active(const KedaQuery& query) {
  auto depth = QueueDepth(*engine_, query);
  if (!depth.ok()) return depth.status();
  return *depth > static_cast<uint64_t>(query.activation_depth);
}

grpc::ServerUnaryReactor* KedaService::IsActive(grpc::CallbackServerContext* context,
                                                const externalscaler::ScaledObjectRef* request,
                                                externalscaler::IsActiveResponse* response) {
  auto query = Admit(context, *request);
  if (!query.ok()) return Reply(context, query.status());
  auto active = Active(*query);
  if (!active.ok()) return Reply(context, active.status());
  response->set_result(*active);
  return Reply(context, absl::OkStatus());
}

grpc::ServerWriteReactor<externalscaler::IsActiveResponse>* KedaService::StreamIsActive(
    grpc::CallbackServerContext* context, const externalscaler::ScaledObjectRef* request) {
  auto query = Admit(context, *request);
  if (!query.ok()) return new RefusedStream(ToGrpcStatus(query.status()));
  auto* stream = new ActiveStream(this, *std::move(query));
  {
    MutexLock lock(&mu_);
    if (shutting_down_ || streams_.size() >= options_.max_streams) {
      delete stream;
      return new RefusedStream(
          shutting_down_
              ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the master is shutting down")
              : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             absl::StrCat("too many StreamIsActive streams (",
                                          options_.max_streams,
                                          "); close some or use IsActive polling")));
    }
    streams_.insert(stream);
  }
  stream->Poll();  // the current answer at once
  return stream;
}

grpc::ServerUnaryReactor* KedaService::GetMetricSpec(
    grpc::CallbackServerContext* context, const externalscaler::ScaledObjectRef* request,
    externalscaler::GetMetricSpecResponse* response) {
  auto query = Admit(context, *request);
  if (!query.ok()) return Reply(context, query.status());
  externalscaler::MetricSpec* spec = response->add_metricspecs();
  spec->set_metricname(kKedaMetricName);
  spec->set_targetsize(query->target_per_worker);
  spec->set_targetsizefloat(static_cast<double>(query->target_per_worker));
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KedaService::GetMetrics(grpc::CallbackServerContext* context,
                                                  const externalscaler::GetMetricsRequest* request,
                                                  externalscaler::GetMetricsResponse* response) {
  auto query = Admit(context, request->scaledobjectref());
  if (!query.ok()) return Reply(context, query.status());
  if (!request->metricname().empty() && request->metricname() != kKedaMetricName) {
    return Reply(context, absl::NotFoundError(absl::StrCat(
                              "unknown metric \"", absl::CHexEscape(request->metricname().substr(0, 128)),
                              "\": this scaler reports ", kKedaMetricName)));
  }
  auto depth = QueueDepth(*engine_, *query);
  if (!depth.ok()) return Reply(context, depth.status());
  externalscaler::MetricValue* value = response->add_metricvalues();
  value->set_metricname(kKedaMetricName);
  value->set_metricvalue(static_cast<int64_t>(*depth));
  value->set_metricvaluefloat(static_cast<double>(*depth));
  return Reply(context, absl::OkStatus());
}

}  // namespace taskq
