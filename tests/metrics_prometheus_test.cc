// Debian's Prometheus server (2.42, /usr/bin/prometheus) scrapes a master
// and a worker (its own --http-listen) started by the test, on loopback, with a configuration the test writes
// (scrape every second); after a known workload a query over Prometheus's
// HTTP API (/api/v1/query) returns the series with the expected value.
// Skips when prometheus is not installed (deploy/install-deps.sh installs it).
#include <unistd.h>

#include <cctype>
#include <string>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_metrics.h"

namespace taskq::testing {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";

// Percent-encodes a query parameter.
std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrCat("%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

// The body of GET http://127.0.0.1:port/path ("" on any failure).
std::string HttpGet(int port, const std::string& path) {
  Reply r = Get(port, path);
  return r.status == 200 ? r.body : "";
}

TEST(MetricsPrometheus, PrometheusScrapesTheMasterAndAnswersAQuery) {
  if (::access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << kPrometheus << " is not installed (deploy/install-deps.sh installs it)";
  }
  Cluster cluster;
  const std::string port_file = cluster.dir() + "/http-port";
  absl::Status s =
      cluster.Start({"--http-listen", "127.0.0.1:0", "--http-port-file", port_file});
  ASSERT_TRUE(s.ok()) << s;
  std::string metrics_address;
  ASSERT_TRUE(WaitFor(
      [&] {
        metrics_address = ReadFile(port_file);
        return !metrics_address.empty() && metrics_address.back() == '\n';
      },
      absl::Seconds(20)));
  metrics_address = std::string(absl::StripAsciiWhitespace(metrics_address));
  // The worker serves its own /metrics.
  const std::string worker_port_file = cluster.dir() + "/worker-http-port";
  Process* worker = cluster.StartWorker(
      {"--queue", "jobs", "--http-listen", "127.0.0.1:0", "--http-port-file", worker_port_file});
  const int worker_port = HttpPort(worker, worker_port_file);
  ASSERT_GT(worker_port, 0);

  const std::string config = cluster.dir() + "/prometheus.yml";
  ASSERT_TRUE(WriteFile(config, absl::StrCat("global:\n"
                                             "  scrape_interval: 1s\n"
                                             "  evaluation_interval: 1s\n"
                                             "scrape_configs:\n"
                                             "  - job_name: taskq\n"
                                             "    static_configs:\n"
                                             "      - targets: ['",
                                             metrics_address, "']\n",
                                             "  - job_name: taskq-worker\n"
                                             "    static_configs:\n"
                                             "      - targets: ['127.0.0.1:", worker_port,
                                             "']\n"))
                  .ok());
  // Up to three ports: another process may take the one picked meanwhile.
  std::unique_ptr<Process> prometheus;
  int web_port = -1;
  for (int attempt = 0; attempt < 3 && !prometheus; ++attempt) {
    web_port = FreeLoopbackPort();
    ASSERT_GT(web_port, 0);
    auto p = cluster.Spawn(absl::StrCat("prometheus-", attempt),
                           {kPrometheus, "--config.file=" + config,
                            "--storage.tsdb.path=" + cluster.dir() + "/tsdb-" +
                                std::to_string(attempt),
                            absl::StrCat("--web.listen-address=127.0.0.1:", web_port)});
    ASSERT_NE(p, nullptr);
    const bool ready = WaitFor(
        [&] { return !p->Running() || !HttpGet(web_port, "/-/ready").empty(); },
        absl::Seconds(30), absl::Milliseconds(50));
    if (ready && p->Running()) {
      prometheus = std::move(p);
    } else {
      p->Stop(absl::Seconds(5));
    }
  }
  ASSERT_NE(prometheus, nullptr) << "prometheus did not become ready";

  // The workload: four tasks put, three of them run.
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();
  CliResult submit = cluster.Cli(
      {"submit", "--queue", "jobs", "--handler", "square", "--wait", "4", "5", "6"});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  CliResult put = cluster.Cli({"put", "idle", "left-alone"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);

  // Prometheus has them once it scraped after the workload.
  auto query = [&](const std::string& promql) {
    return HttpGet(web_port, "/api/v1/query?query=" + UrlEncode(promql));
  };
  // Waits for a scrape after the last put (the sum covers every queue).
  std::string answer;
  const bool scraped = WaitFor(
      [&] {
        answer = query("sum(taskq_queue_puts_total)");
        return absl::StrContains(answer, R"(,"4"]})");
      },
      absl::Seconds(60), absl::Milliseconds(200));
  EXPECT_TRUE(scraped) << answer;
  answer = query(R"(taskq_queue_completions_total{queue="jobs"})");
  EXPECT_TRUE(absl::StrContains(answer, R"(,"3"]})")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, R"("job":"taskq")")) << answer;
  answer = query(R"(taskq_queue_tasks{queue="idle",state="ready"})");
  EXPECT_TRUE(absl::StrContains(answer, R"(,"1"]})")) << answer;
  // The worker's own series, once a scrape of it saw the three tasks.
  EXPECT_TRUE(WaitFor(
      [&] {
        answer = query(R"(taskq_worker_tasks_total{handler="square",outcome="done"})");
        return absl::StrContains(answer, R"(,"3"]})");
      },
      absl::Seconds(60), absl::Milliseconds(200)))
      << answer;
  EXPECT_TRUE(absl::StrContains(answer, R"("job":"taskq-worker")")) << answer;
  answer = query(R"(taskq_worker_handler_seconds_count{handler="square"})");
  EXPECT_TRUE(absl::StrContains(answer, R"(,"3"]})")) << answer;
  // Both targets are up: every scrape parsed.
  answer = query("count(up == 1)");
  EXPECT_TRUE(absl::StrContains(answer, R"(,"2"]})")) << answer;

  EXPECT_EQ(prometheus->Stop(absl::Seconds(10)), 0) << prometheus->Stderr();
}

}  // namespace
}  // namespace taskq::testing
