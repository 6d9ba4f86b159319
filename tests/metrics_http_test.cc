// The master's /metrics (--http-listen, docs/METRICS.md) after a known
// workload: the series a user would graph or alert on have exactly the
// values the workload implies; and the listener's security: plain HTTP off
// loopback is refused without --insecure, and off loopback every request
// needs a credential's bearer token (401 otherwise), served over HTTPS
// with the master's certificate when it has one.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/x509.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_metrics.h"

namespace taskq::testing {
namespace {

TEST(MetricsHttp, SeriesHaveTheValuesOfAKnownWorkload) {
  Cluster cluster;
  const std::string port_file = cluster.dir() + "/http-port";
  absl::Status s =
      cluster.Start({"--http-listen", "127.0.0.1:0", "--http-port-file", port_file});
  ASSERT_TRUE(s.ok()) << s;
  const int port = HttpPort(cluster.master(), port_file);
  ASSERT_GT(port, 0);

  Process* worker = cluster.StartWorker({"--queue", "jobs", "--concurrency", "2"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();
  // Five tasks for the built-in square handler: three integers (done), two
  // that are not (a permanent failure: given up at once, to jobs' own
  // dead-letter set).
  CliResult submit = cluster.Cli(
      {"submit", "--queue", "jobs", "--handler", "square", "--wait", "1", "2", "3", "x", "y"});
  ASSERT_EQ(submit.exit_code, 7) << Describe(submit);  // some failed
  // One call with a wrong token: refused at the headers.
  ASSERT_TRUE(WriteFile(cluster.dir() + "/wrong-token", "not-the-token\n").ok());
  CliResult refused = cluster.CliWithToken(cluster.dir() + "/wrong-token", {"queue", "list"});
  ASSERT_NE(refused.exit_code, 0) << Describe(refused);

  Reply r = Get(port, "/metrics");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string& m = r.body;
  EXPECT_TRUE(absl::StrContains(m, "# TYPE taskq_queue_tasks gauge\n")) << m;
  EXPECT_TRUE(absl::StrContains(m, "# TYPE taskq_task_latency_seconds histogram\n")) << m;
  const std::map<std::string, double> expected = {
      {R"(taskq_queue_tasks{queue="jobs",state="ready"})", 0},
      {R"(taskq_queue_tasks{queue="jobs",state="delayed"})", 0},
      {R"(taskq_queue_tasks{queue="jobs",state="leased"})", 0},
      {R"(taskq_queue_tasks{queue="jobs",state="dead"})", 2},
      {R"(taskq_queue_puts_total{queue="jobs"})", 5},
      {R"(taskq_queue_completions_total{queue="jobs"})", 3},
      {R"(taskq_queue_failures_total{queue="jobs"})", 2},
      {R"(taskq_queue_cancellations_total{queue="jobs"})", 0},
      {R"(taskq_queue_deliveries_total{queue="jobs"})", 5},
      {R"(taskq_queue_redeliveries_total{queue="jobs"})", 0},
      {R"(taskq_queue_lease_expiries_total{queue="jobs"})", 0},
      {R"(taskq_queue_oldest_ready_age_seconds{queue="jobs"})", 0},  // none ready
      // jobs (submit deletes its private reply queue when it is done).
      {"taskq_queues", 1},
      {"taskq_workers_connected", 1},
      // Work done, not result messages read.
      {"taskq_task_latency_seconds_count", 3},
      {R"(taskq_refusals_total{reason="wrong_token"})", 1},
  };
  for (const auto& [series, value] : expected) {
    EXPECT_EQ(Value(m, series), value) << series << "\n" << m;
  }
  // Every lease ended (5 on jobs, and submit's reads of the 5 results).
  EXPECT_GE(Value(m, "taskq_lease_duration_seconds_count").value_or(0), 5) << m;
  EXPECT_GE(Value(m, R"(taskq_rpcs_total{method="Put",code="OK"})").value_or(0), 1) << m;
  EXPECT_GT(Value(m, "taskq_worker_credits").value_or(0), 0) << m;
  EXPECT_GT(Value(m, "taskq_store_commit_seconds_count").value_or(0), 0) << m;
  EXPECT_GT(Value(m, "taskq_store_written_bytes_total").value_or(0), 0) << m;
  EXPECT_GT(Value(m, "process_resident_memory_bytes").value_or(0), 0) << m;
  EXPECT_GT(Value(m, "process_open_fds").value_or(0), 0) << m;
  EXPECT_GT(Value(m, "process_start_time_seconds").value_or(0), 1.7e9) << m;
  EXPECT_TRUE(Value(m, "process_cpu_seconds_total").has_value()) << m;

  // Nothing else is served (but the dashboard, tests/dashboard_http_test).
  EXPECT_EQ(Get(port, "/nothing").status, 404);
  EXPECT_EQ(Get(port, "/metrics/x").status, 404);
}

TEST(MetricsHttp, PlainHttpOffLoopbackIsRefusedWithoutInsecure) {
  Cluster cluster;
  absl::Status s = cluster.Start({"--http-listen", "0.0.0.0:0"});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(),
                                "refusing to serve /metrics over plain HTTP on non-loopback "
                                "address 0.0.0.0:0"))
      << s;
}

TEST(MetricsHttp, OffLoopbackEveryRequestNeedsACredentialsToken) {
  Cluster cluster;
  const std::string port_file = cluster.dir() + "/http-port";
  absl::Status s = cluster.Start(
      {"--http-listen", "0.0.0.0:0", "--insecure", "--http-port-file", port_file});
  ASSERT_TRUE(s.ok()) << s;
  const int port = HttpPort(cluster.master(), port_file);
  ASSERT_GT(port, 0);
  // A reader credential: the least a scraper needs.
  CliResult made = cluster.Cli({"credential", "create", "scraper", "--role", "reader"});
  ASSERT_EQ(made.exit_code, 0) << Describe(made);
  const std::string reader_token(absl::StripAsciiWhitespace(made.out));

  Reply none = Get(port, "/metrics");
  EXPECT_EQ(none.status, 401);
  EXPECT_TRUE(absl::StrContains(none.body, "Authorization: Bearer <token>")) << none.body;
  EXPECT_FALSE(absl::StrContains(none.body, "taskq_")) << none.body;
  // Unknown paths answer 401 too: nothing is learnt without a token (the
  // dashboard's page is public: tests/dashboard_http_test).
  EXPECT_EQ(Get(port, "/nothing").status, 401);

  const std::string wrong = "tq1.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  Reply bad = Get(port, "/metrics", {{"Authorization", "Bearer " + wrong}});
  EXPECT_EQ(bad.status, 401);
  EXPECT_TRUE(absl::StrContains(bad.body, "unauthorized")) << bad.body;
  EXPECT_EQ(Get(port, "/metrics", {{"Authorization", "Basic " + reader_token}}).status, 401);

  Reply good = Get(port, "/metrics", {{"Authorization", "Bearer " + reader_token}});
  EXPECT_EQ(good.status, 200) << good.body;
  EXPECT_TRUE(absl::StrContains(good.body, "taskq_queues ")) << good.body;
  // The master token works as well.
  const std::string master_token(absl::StripAsciiWhitespace(ReadFile(cluster.token_file())));
  EXPECT_EQ(Get(port, "/metrics", {{"Authorization", "Bearer " + master_token}}).status, 200);

  // The refusals are counted, and no token reached the log.
  EXPECT_GE(Value(good.body, R"(taskq_refusals_total{reason="no_token"})").value_or(0), 2)
      << good.body;
  EXPECT_GE(Value(good.body, R"(taskq_refusals_total{reason="wrong_token"})").value_or(0), 1)
      << good.body;
  for (const std::string& secret : {wrong, reader_token, master_token}) {
    EXPECT_FALSE(absl::StrContains(cluster.master()->Stderr(), secret));
    EXPECT_FALSE(absl::StrContains(cluster.master()->Stdout(), secret));
  }
}

// SHA-256 of the certificate an HTTPS server on 127.0.0.1:port serves to a
// new connection (not verified: the test compares it with the file).
std::string ServedFingerprint(int port) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  BIO* bio = BIO_new_ssl_connect(ctx);
  BIO_set_conn_hostname(bio, absl::StrCat("127.0.0.1:", port).c_str());
  std::string out = "no handshake";
  SSL* ssl = nullptr;
  BIO_get_ssl(bio, &ssl);
  if (BIO_do_connect(bio) == 1 && BIO_do_handshake(bio) == 1 && ssl != nullptr) {
    X509* cert = SSL_get1_peer_certificate(ssl);
    BIO* mem = BIO_new(BIO_s_mem());
    if (cert != nullptr && PEM_write_bio_X509(mem, cert) == 1) {
      char* data = nullptr;
      const long n = BIO_get_mem_data(mem, &data);
      auto fingerprint = CertificateSha256Hex(std::string(data, static_cast<size_t>(n)));
      out = fingerprint.ok() ? *fingerprint : "unparsable certificate";
    }
    BIO_free(mem);
    X509_free(cert);
  }
  BIO_free_all(bio);
  SSL_CTX_free(ctx);
  return out;
}

// With TLS set up (`taskq-master init`), an off-loopback listener serves
// HTTPS with the master's certificate: a scraper that trusts the master's
// CA gets the metrics with a token; plain HTTP on that port gets nothing.
// A certificate rotated on disk is served to new connections without a
// restart, as on the gRPC port.
TEST(MetricsHttp, OffLoopbackWithTlsServesHttpsWithTheMastersCertificate) {
  Cluster cluster;
  absl::Status init = cluster.InitMaster();
  ASSERT_TRUE(init.ok()) << init;
  const std::string port_file = cluster.dir() + "/http-port";
  absl::Status s = cluster.Start({"--http-listen", "0.0.0.0:0", "--http-port-file", port_file});
  ASSERT_TRUE(s.ok()) << s;
  const int port = HttpPort(cluster.master(), port_file);
  ASSERT_GT(port, 0);
  const std::string token(absl::StripAsciiWhitespace(ReadFile(cluster.token_file())));

  httplib::SSLClient https("127.0.0.1", port);
  https.set_ca_cert_path((cluster.data_dir() + "/tls/ca.pem").c_str());
  https.enable_server_certificate_verification(true);
  https.set_connection_timeout(5);
  https.set_read_timeout(10);
  auto good = https.Get("/metrics", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(good) << httplib::to_string(good.error());
  EXPECT_EQ(good->status, 200) << good->body;
  EXPECT_TRUE(absl::StrContains(good->body, "taskq_queues ")) << good->body;
  auto none = https.Get("/metrics");
  ASSERT_TRUE(none) << httplib::to_string(none.error());
  EXPECT_EQ(none->status, 401);

  // A client that does not trust the master's CA is refused by TLS itself.
  httplib::SSLClient stranger("127.0.0.1", port);
  stranger.set_ca_cert_path("/etc/ssl/certs/ca-certificates.crt");
  stranger.enable_server_certificate_verification(true);
  stranger.set_connection_timeout(5);
  EXPECT_FALSE(stranger.Get("/metrics", {{"Authorization", "Bearer " + token}}));

  // Plain HTTP on the HTTPS port: no answer, and no metrics.
  Reply plain = Get(port, "/metrics", {{"Authorization", "Bearer " + token}});
  EXPECT_NE(plain.status, 200);
  EXPECT_FALSE(absl::StrContains(plain.body, "taskq_")) << plain.body;

  const std::string server_pem = cluster.data_dir() + "/tls/server.pem";
  const std::string before = *CertificateSha256Hex(ReadFile(server_pem));
  ASSERT_EQ(ServedFingerprint(port), before);
  absl::Status rotate = cluster.InitMaster({"--rotate-server-cert"});
  ASSERT_TRUE(rotate.ok()) << rotate;
  const std::string after = *CertificateSha256Hex(ReadFile(server_pem));
  ASSERT_NE(after, before);
  std::string served;
  EXPECT_TRUE(WaitFor([&] { return (served = ServedFingerprint(port)) == after; },
                      absl::Seconds(15)))
      << "still served: " << served;
  // And it verifies against the CA as before.
  auto again = https.Get("/metrics", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(again) << httplib::to_string(again.error());
  EXPECT_EQ(again->status, 200);
}

}  // namespace
}  // namespace taskq::testing
