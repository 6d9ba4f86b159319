// KedaService: KEDA's externalscaler.ExternalScaler (proto/externalscaler)
// over the queue engine, read-only: it reports the depth of the queues a
// ScaledObject names (master/keda_metadata.h) and nothing else.
//
//   GetMetricSpec  taskq-queue-depth, target targetPerWorker
//   GetMetrics     taskq-queue-depth = ready + leased of the queues
//   IsActive       depth > activationDepth
//   StreamIsActive the IsActive answer at once, then each change, checked
//                  every poll_interval; ends when the client cancels and
//                  on Shutdown (UNAVAILABLE). At most max_streams at once
//                  (RESOURCE_EXHAUSTED beyond).
//
// With `credentials` (the TLS listener, master/keda_server.h) every call
// must come with a client certificate of a live credential whose role may
// read queue stats on those queues (the GetQueueStats rule of
// master/roles.h: reader, producer, admin); without (loopback, --insecure)
// calls are not authenticated.
//
// Thread-safety: gRPC calls the handlers from its threads; Shutdown from
// any thread, once, before the gRPC server is shut down.
#pragma once

#include <atomic>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "common/sync.h"
#include "externalscaler/externalscaler.grpc.pb.h"
#include "master/credentials.h"
#include "master/keda_metadata.h"
#include "master/queue_engine.h"

namespace taskq {

struct KedaServiceOptions {
  absl::Duration poll_interval = absl::Seconds(1);
  size_t max_streams = 256;
};

class KedaService final : public externalscaler::ExternalScaler::CallbackService {
 public:
  // `credentials` may be null (no authentication); both outlive this.
  KedaService(QueueEngine* engine, const CredentialTable* credentials,
              KedaServiceOptions options = {});
  ~KedaService() override;

  // Ends every StreamIsActive (UNAVAILABLE) and refuses new ones;
  // idempotent.
  void Shutdown();

  grpc::ServerUnaryReactor* IsActive(grpc::CallbackServerContext* context,
                                     const externalscaler::ScaledObjectRef* request,
                                     externalscaler::IsActiveResponse* response) override;
  grpc::ServerWriteReactor<externalscaler::IsActiveResponse>* StreamIsActive(
      grpc::CallbackServerContext* context,
      const externalscaler::ScaledObjectRef* request) override;
  grpc::ServerUnaryReactor* GetMetricSpec(grpc::CallbackServerContext* context,
                                          const externalscaler::ScaledObjectRef* request,
                                          externalscaler::GetMetricSpecResponse* response) override;
  grpc::ServerUnaryReactor* GetMetrics(grpc::CallbackServerContext* context,
                                       const externalscaler::GetMetricsRequest* request,
                                       externalscaler::GetMetricsResponse* response) override;

 private:
  class ActiveStream;

  // Authenticates the caller (with credentials), parses the metadata and
  // checks the caller may read those queues.
  absl::StatusOr<KedaQuery> Admit(grpc::CallbackServerContext* context,
                                  const externalscaler::ScaledObjectRef& ref);
  absl::StatusOr<bool> Active(const KedaQuery& query);
  void PollLoop();
  void Remove(ActiveStream* stream);

  QueueEngine* const engine_;
  const CredentialTable* const credentials_;
  const KedaServiceOptions options_;
  Mutex mu_;
  CondVar wake_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<ActiveStream*> streams_ ABSL_GUARDED_BY(mu_);
  std::thread poller_;
};

}  // namespace taskq
