// A worker's own /metrics (taskq-worker --http-listen, docs/METRICS.md
// "Worker") against a real master: handlers running now, tasks finished by
// handler and outcome, handler latency, the stream's state across a master
// restart; handler names a client made up share one "other" label; and the
// listener's security: off loopback a token file is required, plain HTTP
// needs --http-insecure, and every request needs the token (401 otherwise).
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_metrics.h"

namespace taskq::testing {
namespace {

double Metric(int port, const std::string& series) {
  const Reply r = Get(port, "/metrics");
  EXPECT_EQ(r.status, 200) << r.body;
  return Value(r.body, series).value_or(-1);
}

TEST(WorkerMetrics, SeriesFollowTasksAndAMasterRestart) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string port_file = cluster.dir() + "/worker-http-port";
  Process* worker = cluster.StartWorker({"--queue", "jobs", "--concurrency", "4",
                                         "--http-listen", "127.0.0.1:0", "--http-port-file",
                                         port_file});
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();
  const int port = HttpPort(worker, port_file);
  ASSERT_GT(port, 0);
  EXPECT_EQ(Metric(port, "taskq_worker_connected"), 1);
  EXPECT_EQ(Metric(port, "taskq_worker_master_connected{master=\"" + cluster.address() + "\"}"),
            1);
  EXPECT_EQ(Metric(port, "taskq_worker_reconnects_total"), 0);
  EXPECT_GE(Metric(port, "taskq_worker_credits_granted_total"), 4);

  // A sleep that runs while we look.
  CliResult sleeper = cluster.Cli({"put", "jobs", "--handler", "sleep", "30"});
  ASSERT_EQ(sleeper.exit_code, 0) << Describe(sleeper);
  EXPECT_TRUE(WaitFor([&] { return Metric(port, "taskq_worker_tasks_running") == 1; },
                      absl::Seconds(20)));

  // Two squares done, one failed; two handlers nobody registered.
  CliResult squares =
      cluster.Cli({"submit", "--queue", "jobs", "--handler", "square", "--wait", "3", "4", "x"});
  EXPECT_EQ(squares.exit_code, 7) << Describe(squares);
  for (const std::string handler : {"made-up-1", "made-up-2"}) {
    CliResult odd = cluster.Cli({"submit", "--queue", "jobs", "--handler", handler, "--wait", "1"});
    EXPECT_EQ(odd.exit_code, 7) << Describe(odd);
  }
  const std::string text = Get(port, "/metrics").body;
  EXPECT_EQ(Value(text, "taskq_worker_tasks_total{handler=\"square\",outcome=\"done\"}"), 2)
      << text;
  EXPECT_EQ(Value(text, "taskq_worker_tasks_total{handler=\"square\",outcome=\"failed\"}"), 1)
      << text;
  EXPECT_EQ(Value(text, "taskq_worker_tasks_total{handler=\"other\",outcome=\"failed\"}"), 2)
      << text;
  EXPECT_FALSE(absl::StrContains(text, "made-up")) << "client text became a label";
  EXPECT_EQ(Value(text, "taskq_worker_handler_seconds_count{handler=\"square\"}"), 3) << text;
  EXPECT_EQ(Value(text, "taskq_worker_handler_seconds_bucket{handler=\"square\",le=\"+Inf\"}"), 3)
      << text;
  EXPECT_EQ(Value(text, "taskq_worker_tasks_running"), 1) << text;
  EXPECT_GT(Value(text, "process_resident_memory_bytes").value_or(0), 0) << text;

  // The master goes away and comes back: the worker's stream drops (the
  // sleep stops: its lease is the master's), then comes up again.
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  ASSERT_TRUE(WaitFor([&] { return Count(worker->Stderr(), "connected to") >= 2; },
                      absl::Seconds(30)))
      << worker->Stderr();
  EXPECT_TRUE(WaitFor([&] { return Metric(port, "taskq_worker_reconnects_total") == 1; },
                      absl::Seconds(10)));
  EXPECT_EQ(Metric(port, "taskq_worker_connected"), 1);
}

TEST(WorkerMetrics, OffLoopbackATokenFileIsRequired) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  Process* worker = cluster.StartWorker({"--http-listen", "0.0.0.0:0", "--http-insecure"});
  ASSERT_TRUE(worker->Wait(absl::Seconds(20)).has_value()) << "it should refuse to start";
  EXPECT_EQ(worker->exit_status(), 1);
  EXPECT_TRUE(absl::StrContains(worker->Stderr(), "give --http-token-file")) << worker->Stderr();
}

TEST(WorkerMetrics, OffLoopbackPlainHttpNeedsHttpInsecure) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string token_file = cluster.dir() + "/metrics-token";
  ASSERT_TRUE(WriteFile(token_file, "6f1c0e2b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a09\n").ok());
  Process* worker =
      cluster.StartWorker({"--http-listen", "0.0.0.0:0", "--http-token-file", token_file});
  ASSERT_TRUE(worker->Wait(absl::Seconds(20)).has_value()) << "it should refuse to start";
  EXPECT_EQ(worker->exit_status(), 1);
  EXPECT_TRUE(absl::StrContains(worker->Stderr(), "--http-insecure if the network is trusted"))
      << worker->Stderr();
}

TEST(WorkerMetrics, EveryRequestNeedsTheTokenOffLoopbackAndWhenGivenOnLoopback) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string token = "6f1c0e2b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a09";
  const std::string token_file = cluster.dir() + "/metrics-token";
  ASSERT_TRUE(WriteFile(token_file, token + "\n").ok());
  for (const std::string listen : {"0.0.0.0:0", "127.0.0.1:0"}) {
    SCOPED_TRACE(listen);
    const std::string port_file = cluster.dir() + "/port-" + listen.substr(0, 3);
    std::vector<std::string> args = {"--http-listen", listen, "--http-token-file", token_file,
                                     "--http-port-file", port_file};
    if (listen[0] == '0') args.push_back("--http-insecure");
    Process* worker = cluster.StartWorker(args);
    const int port = HttpPort(worker, port_file);
    ASSERT_GT(port, 0);
    const Reply none = Get(port, "/metrics");
    EXPECT_EQ(none.status, 401) << none.body;
    EXPECT_TRUE(absl::StrContains(none.body, "--http-token-file")) << none.body;
    const Reply wrong =
        Get(port, "/metrics", {{"Authorization", "Bearer " + std::string(token.size(), 'a')}});
    EXPECT_EQ(wrong.status, 401) << wrong.body;
    const Reply good = Get(port, "/metrics", {{"Authorization", "Bearer " + token}});
    EXPECT_EQ(good.status, 200) << good.body;
    EXPECT_TRUE(absl::StrContains(good.body, "taskq_worker_tasks_running")) << good.body;
    worker->Stop();
    EXPECT_TRUE(absl::StrContains(worker->Stderr(), "refused: /metrics request"))
        << worker->Stderr();
    EXPECT_FALSE(absl::StrContains(worker->Stderr(), token.substr(0, 12))) << worker->Stderr();
  }
}

// With --http-tls-cert/--http-tls-key off loopback the page is HTTPS (no
// --http-insecure needed), and the token is still required.
TEST(WorkerMetrics, OffLoopbackServesHttpsWithItsCertificate) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  // A CA and a certificate for 127.0.0.1, made the way a deployment makes them.
  const std::string tls_dir = cluster.dir() + "/worker-tls";
  absl::Status init = cluster.InitMaster({"--host", "127.0.0.1"}, tls_dir);
  ASSERT_TRUE(init.ok()) << init;
  const std::string token = "0a9b8c7d6e5f40312a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091";
  const std::string token_file = cluster.dir() + "/metrics-token";
  ASSERT_TRUE(WriteFile(token_file, token + "\n").ok());
  const std::string port_file = cluster.dir() + "/worker-https-port";
  Process* worker = cluster.StartWorker(
      {"--http-listen", "0.0.0.0:0", "--http-port-file", port_file, "--http-token-file",
       token_file, "--http-tls-cert", tls_dir + "/tls/server.pem", "--http-tls-key",
       tls_dir + "/tls/server.key"});
  const int port = HttpPort(worker, port_file);
  ASSERT_GT(port, 0);
  httplib::SSLClient client("127.0.0.1", port);
  client.set_ca_cert_path((tls_dir + "/tls/ca.pem").c_str());
  client.enable_server_certificate_verification(true);
  client.set_connection_timeout(5);
  auto none = client.Get("/metrics");
  ASSERT_TRUE(none) << "no HTTPS answer: " << httplib::to_string(none.error());
  EXPECT_EQ(none->status, 401);
  auto good = client.Get("/metrics", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200);
  EXPECT_TRUE(absl::StrContains(good->body, "taskq_worker_connected")) << good->body;
  // Plain HTTP on that port gets no page.
  EXPECT_NE(Get(port, "/metrics", {{"Authorization", "Bearer " + token}}).status, 200);
}

}  // namespace
}  // namespace taskq::testing
