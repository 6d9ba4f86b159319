// KEDA's external scaler on the master's --keda-listen, driven the way KEDA
// drives it (a generated externalscaler client, the ScaledObject's trigger
// metadata in every call): the metric spec, the depth following puts and
// takes, IsActive and StreamIsActive flipping, refusals of bad metadata, and
// the transport rules (plaintext only on loopback; off loopback TLS with a
// client certificate of a live credential in scope).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <csignal>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "externalscaler/externalscaler.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

using externalscaler::ExternalScaler;
using externalscaler::GetMetricsRequest;
using externalscaler::GetMetricsResponse;
using externalscaler::GetMetricSpecResponse;
using externalscaler::IsActiveResponse;
using externalscaler::ScaledObjectRef;

// As KEDA sends it: the trigger's whole metadata, its own keys included.
ScaledObjectRef Ref(std::map<std::string, std::string> metadata = {
                        {"queue", "tasks"}, {"targetPerWorker", "10"}}) {
  ScaledObjectRef ref;
  ref.set_name("taskq-worker");
  ref.set_namespace_("default");
  (*ref.mutable_scalermetadata())["scalerAddress"] = "taskq-master:6000";
  for (const auto& [k, v] : metadata) (*ref.mutable_scalermetadata())[k] = v;
  return ref;
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

// The master with --keda-listen `listen` (+ `extra`); the scaler's address.
absl::StatusOr<std::string> StartWithKeda(Cluster& cluster, const std::string& listen,
                                          std::vector<std::string> extra = {}) {
  const std::string port_file = cluster.dir() + "/keda-port";
  std::vector<std::string> args = {"--keda-listen", listen, "--keda-port-file", port_file};
  args.insert(args.end(), extra.begin(), extra.end());
  if (absl::Status s = cluster.Start(args); !s.ok()) return s;
  std::string address;
  WaitFor(
      [&] {
        address = std::string(absl::StripAsciiWhitespace(ReadFile(port_file)));
        return !address.empty();
      },
      absl::Seconds(10));
  if (address.empty()) return absl::DeadlineExceededError("no --keda-port-file");
  return address;
}

class Scaler {
 public:
  explicit Scaler(std::shared_ptr<grpc::Channel> channel)
      : stub_(ExternalScaler::NewStub(std::move(channel))) {}
  static Scaler Plain(const std::string& address) {
    return Scaler(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  absl::StatusOr<GetMetricSpecResponse> Spec(const ScaledObjectRef& ref = Ref()) {
    GetMetricSpecResponse out;
    grpc::Status s = stub_->GetMetricSpec(Ctx().get(), ref, &out);
    if (!s.ok()) return Err(s);
    return out;
  }
  // The depth GetMetrics reports (-1 and a test failure on an error).
  long long Depth(const ScaledObjectRef& ref = Ref()) {
    auto r = Metrics(ref);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->metricvalues_size() != 1) return -1;
    EXPECT_EQ(r->metricvalues(0).metricname(), "taskq-queue-depth");
    EXPECT_EQ(r->metricvalues(0).metricvaluefloat(),
              static_cast<double>(r->metricvalues(0).metricvalue()));
    return r->metricvalues(0).metricvalue();
  }
  absl::StatusOr<GetMetricsResponse> Metrics(const ScaledObjectRef& ref = Ref(),
                                             const std::string& metric = "taskq-queue-depth") {
    GetMetricsRequest req;
    *req.mutable_scaledobjectref() = ref;
    req.set_metricname(metric);
    GetMetricsResponse out;
    grpc::Status s = stub_->GetMetrics(Ctx().get(), req, &out);
    if (!s.ok()) return Err(s);
    return out;
  }
  absl::StatusOr<bool> Active(const ScaledObjectRef& ref = Ref()) {
    IsActiveResponse out;
    grpc::Status s = stub_->IsActive(Ctx().get(), ref, &out);
    if (!s.ok()) return Err(s);
    return out.result();
  }
  ExternalScaler::Stub& stub() { return *stub_; }

  static absl::Status Err(const grpc::Status& s) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

 private:
  std::unique_ptr<ExternalScaler::Stub> stub_;
};

TEST(KedaScaler, MetricsFollowTheQueueDepthAndIsActiveFlips) {
  Cluster cluster;
  auto address = StartWithKeda(cluster, "127.0.0.1:0");
  ASSERT_TRUE(address.ok()) << address.status();
  Scaler keda = Scaler::Plain(*address);

  auto spec = keda.Spec();
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->metricspecs_size(), 1);
  EXPECT_EQ(spec->metricspecs(0).metricname(), "taskq-queue-depth");
  EXPECT_EQ(spec->metricspecs(0).targetsize(), 10);
  EXPECT_EQ(spec->metricspecs(0).targetsizefloat(), 10.0);

  // No queue yet: depth 0, inactive (the workers may stay at zero).
  EXPECT_EQ(keda.Depth(), 0);
  EXPECT_EQ(keda.Active().value_or(true), false);

  std::vector<std::string> put = {"put", "tasks"};
  for (int i = 0; i < 25; ++i) put.push_back(absl::StrCat(i));
  CliResult r = cluster.Cli(put);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(keda.Depth(), 25);
  EXPECT_EQ(keda.Active().value_or(false), true);

  // Leased tasks still need a worker: counted. Delayed ones are not.
  CliResult leased = cluster.Cli({"get", "tasks", "--lease", "--max", "5", "--nowait"});
  ASSERT_EQ(leased.exit_code, 0) << Describe(leased);
  ASSERT_EQ(Lines(leased.out).size(), 5u) << leased.out;
  EXPECT_EQ(keda.Depth(), 25);
  r = cluster.Cli({"put", "tasks", "later", "--delay", "3600"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(keda.Depth(), 25);

  // Several queues are summed; activationDepth raises the bar.
  r = cluster.Cli({"put", "other", "x", "y"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(keda.Depth(Ref({{"queue", "tasks, other"}, {"targetPerWorker", "10"}})), 27);
  EXPECT_EQ(keda.Active(Ref({{"queue", "other"}, {"targetPerWorker", "1"},
                             {"activationDepth", "2"}}))
                .value_or(true),
            false);

  // The 20 ready ones taken, then the 5 leased ones completed: nothing
  // left a worker could run, and IsActive says so.
  r = cluster.Cli({"get", "tasks", "--max", "20", "--nowait"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(keda.Depth(), 5);
  EXPECT_EQ(keda.Active().value_or(false), true);
  for (const std::string& line : Lines(leased.out)) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    ASSERT_GE(f.size(), 2u) << line;
    r = cluster.Cli({"complete", f[0], "--lease", f[1]});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
  }
  EXPECT_EQ(keda.Depth(), 0);
  EXPECT_EQ(keda.Active().value_or(true), false);
  EXPECT_EQ(cluster.StatNumber("tasks", "delayed"), 1);
}

// StreamIsActive: the answer at once, then each change (the master polls
// its engine every second); the client's cancel and the master's shutdown
// both end it.
TEST(KedaScaler, StreamIsActiveSendsChangesAndEnds) {
  Cluster cluster;
  auto address = StartWithKeda(cluster, "127.0.0.1:0");
  ASSERT_TRUE(address.ok()) << address.status();
  Scaler keda = Scaler::Plain(*address);

  auto ctx = Ctx(absl::Seconds(60));
  auto stream = keda.stub().StreamIsActive(ctx.get(), Ref());
  IsActiveResponse msg;
  ASSERT_TRUE(stream->Read(&msg));
  EXPECT_FALSE(msg.result());
  ASSERT_EQ(cluster.Cli({"put", "tasks", "a", "b"}).exit_code, 0);
  ASSERT_TRUE(stream->Read(&msg));
  EXPECT_TRUE(msg.result());
  ASSERT_EQ(cluster.Cli({"get", "tasks", "--max", "2", "--nowait"}).exit_code, 0);
  ASSERT_TRUE(stream->Read(&msg));
  EXPECT_FALSE(msg.result());
  ctx->TryCancel();
  while (stream->Read(&msg)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // A stream open when the master stops ends with UNAVAILABLE, and does
  // not hold the master up.
  auto ctx2 = Ctx(absl::Seconds(60));
  auto open = keda.stub().StreamIsActive(ctx2.get(), Ref());
  ASSERT_TRUE(open->Read(&msg));
  const absl::Time stop = absl::Now();
  cluster.master()->Kill(SIGTERM);
  EXPECT_FALSE(open->Read(&msg));
  grpc::Status ended = open->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
  EXPECT_EQ(cluster.master()->Wait(absl::Seconds(10)), 0);
  EXPECT_LT(absl::Now() - stop, absl::Seconds(5));
}

// What KEDA would log for a ScaledObject the scaler cannot use: every RPC
// refuses it with INVALID_ARGUMENT and says what is wrong.
TEST(KedaScaler, BadMetadataIsRefusedWithAClearMessage) {
  Cluster cluster;
  auto address = StartWithKeda(cluster, "127.0.0.1:0");
  ASSERT_TRUE(address.ok()) << address.status();
  Scaler keda = Scaler::Plain(*address);
  const ScaledObjectRef no_target = Ref({{"queue", "tasks"}});
  const ScaledObjectRef typo = Ref({{"queue", "tasks"}, {"targetPerWorker", "10"},
                                    {"activationdepth", "1"}});

  auto spec = keda.Spec(no_target);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "targetPerWorker is missing"))
      << spec.status();
  auto metrics = keda.Metrics(typo);
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(metrics.status().message(), "unknown key \"activationdepth\""))
      << metrics.status();
  auto active = keda.Active(Ref({{"queue", "no spaces"}, {"targetPerWorker", "10"}}));
  EXPECT_EQ(active.status().code(), absl::StatusCode::kInvalidArgument) << active.status();
  auto zero = keda.Active(Ref({{"queue", "tasks"}, {"targetPerWorker", "0"}}));
  EXPECT_TRUE(absl::StrContains(zero.status().message(), "want a whole number from 1"))
      << zero.status();
  auto ctx = Ctx();
  auto stream = keda.stub().StreamIsActive(ctx.get(), no_target);
  IsActiveResponse msg;
  EXPECT_FALSE(stream->Read(&msg));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto other = keda.Metrics(Ref(), "s0-something");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound) << other.status();

  // Oversized metadata is refused, not read whole.
  auto big = keda.Spec(Ref({{"queue", "tasks"}, {"targetPerWorker", "1"},
                            {"caCert", std::string(64 << 10, 'c')}}));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << big.status();
}

TEST(KedaScaler, PlaintextOffLoopbackIsRefusedWithoutInsecure) {
  Cluster cluster;
  auto address = StartWithKeda(cluster, "0.0.0.0:0");
  ASSERT_FALSE(address.ok());
  EXPECT_TRUE(absl::StrContains(address.status().message(),
                                "refusing to serve the KEDA scaler in plaintext on non-loopback "
                                "address 0.0.0.0:0"))
      << address.status();
}

// Off loopback with the master's TLS: KEDA must present a client
// certificate signed by the master's CA, of a credential that is live and
// may read the queue's stats.
TEST(KedaScaler, OffLoopbackTlsRequiresAClientCertificateOfACredential) {
  Cluster cluster;
  absl::Status init = cluster.InitMaster();
  ASSERT_TRUE(init.ok()) << init;
  auto address = StartWithKeda(cluster, "0.0.0.0:0");
  ASSERT_TRUE(address.ok()) << address.status();
  const std::string port = address->substr(address->rfind(':') + 1);
  const std::string target = "127.0.0.1:" + port;
  const std::string ca_path = cluster.data_dir() + "/tls/ca.pem";
  const std::string ca = ReadFile(ca_path);
  auto tls = [&](const std::string& cert, const std::string& key) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ca;
    o.pem_cert_chain = cert;
    o.pem_private_key = key;
    return Scaler(grpc::CreateChannel(target, grpc::SslCredentials(o)));
  };

  // No certificate: the handshake fails; plaintext gets nothing either.
  EXPECT_EQ(tls("", "").Spec().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Scaler::Plain(target).Spec().status().code(), absl::StatusCode::kUnavailable);

  const std::vector<std::string> tls_args = {"--tls-ca", ca_path};
  auto make = [&](const std::string& name, std::vector<std::string> flags) {
    std::vector<std::string> args = tls_args;
    for (const char* a : {"credential", "create"}) args.push_back(a);
    args.push_back(name);
    args.insert(args.end(), flags.begin(), flags.end());
    for (const std::string& a : {std::string("--cert"), std::string("--cert-out"),
                                 cluster.dir() + "/" + name}) {
      args.push_back(a);
    }
    CliResult r = cluster.Cli(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return tls(ReadFile(cluster.dir() + "/" + name + ".pem"),
               ReadFile(cluster.dir() + "/" + name + ".key"));
  };
  Scaler reader = make("keda", {"--role", "reader", "--queues", "tasks"});
  auto spec = reader.Spec();
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->metricspecs(0).targetsize(), 10);
  std::vector<std::string> put = tls_args;
  for (const char* a : {"put", "tasks", "a", "b", "c"}) put.push_back(a);
  ASSERT_EQ(cluster.Cli(put).exit_code, 0);
  EXPECT_EQ(reader.Depth(), 3);

  // Outside its queues, or a role that may not read stats: refused.
  auto other = reader.Metrics(Ref({{"queue", "billing"}, {"targetPerWorker", "1"}}));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied) << other.status();
  EXPECT_TRUE(absl::StrContains(other.status().message(), "billing")) << other.status();
  Scaler worker = make("w1", {"--role", "worker", "--queues", "tasks"});
  auto denied = worker.Active();
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_TRUE(absl::StrContains(denied.status().message(), "may not read queue stats"))
      << denied.status();

  // Revoked: its certificate still verifies, the credential does not.
  std::vector<std::string> revoke = tls_args;
  for (const char* a : {"credential", "revoke", "keda"}) revoke.push_back(a);
  ASSERT_EQ(cluster.Cli(revoke).exit_code, 0);
  auto revoked = reader.Active();
  EXPECT_EQ(revoked.status().code(), absl::StatusCode::kUnauthenticated) << revoked.status();
  EXPECT_TRUE(absl::StrContains(revoked.status().message(), "revoked")) << revoked.status();
}

}  // namespace
}  // namespace taskq::testing
