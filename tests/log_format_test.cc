// --log-format json on the real binaries (docs/LOGGING.md): every line the
// master, a worker and the CLI write to stderr is one JSON object with ts,
// level, component and msg, and the important events carry their ids; no
// token (right or wrong) appears in any line at debug level, also around
// refused calls; a hostile client cannot turn a flood of bad requests into
// a flood of log lines.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/channel.h"
#include "common/client.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

const std::vector<std::string> kJsonDebug = {"--log-format", "json", "--log-level", "debug"};

std::vector<std::string> With(std::vector<std::string> args,
                              const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Checks with Python's json module that every line of `path` is one JSON
// object with ts, level, component and msg. Returns "component|msg|key=value,..."
// for each line (values of the fields beyond the four), or an "ERROR ..."
// line for each line that is not.
std::vector<std::string> ParseJsonLines(const std::string& path) {
  const std::string command = absl::StrCat(
      "python3 -c '\n"
      "import json, sys\n"
      "for n, line in enumerate(open(sys.argv[1], encoding=\"utf-8\", errors=\"strict\")):\n"
      "    try:\n"
      "        o = json.loads(line)\n"
      "        assert isinstance(o, dict)\n"
      "        for k in (\"ts\", \"level\", \"component\", \"msg\", \"program\"):\n"
      "            assert isinstance(o[k], str) and o[k], k\n"
      "        assert o[\"level\"] in (\"debug\", \"info\", \"warn\", \"error\")\n"
      "        extra = \",\".join(\"%s=%s\" % (k, v) for k, v in o.items()\n"
      "                         if k not in (\"ts\", \"level\", \"component\", \"msg\", \"program\"))\n"
      "        print(\"%s|%s|%s\" % (o[\"component\"], o[\"msg\"].replace(\"\\n\", \" \"), extra))\n"
      "    except Exception as e:\n"
      "        print(\"ERROR line %d: %r: %r\" % (n + 1, e, line))\n"
      "' ",
      path);
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {"ERROR cannot run python3"};
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  if (::pclose(pipe) != 0) return {"ERROR python3 failed: " + out};
  return Lines(out);
}

size_t Errors(const std::vector<std::string>& parsed) {
  size_t n = 0;
  for (const std::string& p : parsed) n += absl::StartsWith(p, "ERROR");
  return n;
}

bool Has(const std::vector<std::string>& parsed, const std::string& part) {
  for (const std::string& p : parsed) {
    if (absl::StrContains(p, part)) return true;
  }
  return false;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) absl::StrAppend(&out, l, "\n");
  return out;
}

TEST(LogFormat, EveryStderrLineOfTheThreeBinariesIsAJsonObjectWithIds) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start(kJsonDebug).ok());
  Process* worker = cluster.StartWorker(With({"--queue", "jobs", "--id", "w1"}, kJsonDebug));
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();
  CliResult put = cluster.Cli(With({"submit", "--queue", "jobs", "--wait", "--handler", "square", "7"},
                                   kJsonDebug));
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  // The CLI's own error line (a queue name it refuses) is a JSON line too.
  CliResult bad = cluster.Cli(With({"queue", "stats", "no such queue\n"}, {"--log-format", "json"}));
  ASSERT_NE(bad.exit_code, 0) << Describe(bad);
  ASSERT_TRUE(WriteFile(cluster.dir() + "/cli.err", bad.err).ok());
  worker->Stop();
  cluster.master()->Stop();

  const auto master = ParseJsonLines(cluster.master()->stderr_path());
  EXPECT_EQ(Errors(master), 0u) << Joined(master);
  EXPECT_TRUE(Has(master, "master/work_stream|worker connected|worker=w1,peer=")) << Joined(master);
  EXPECT_TRUE(Has(master, "master/work_stream|worker disconnected")) << Joined(master);
  EXPECT_TRUE(Has(master, "master/main|stopped|")) << Joined(master);

  const auto work = ParseJsonLines(worker->stderr_path());
  EXPECT_EQ(Errors(work), 0u) << Joined(work);
  EXPECT_TRUE(Has(work, "worker/worker|connected to the master|worker=w1,master=")) << Joined(work);
  EXPECT_TRUE(Has(work, "worker/worker|task started|task=")) << Joined(work);
  EXPECT_TRUE(Has(work, ",queue=jobs,handler=square,attempt=1")) << Joined(work);

  const auto cli = ParseJsonLines(cluster.dir() + "/cli.err");
  ASSERT_EQ(cli.size(), 1u) << bad.err;
  EXPECT_EQ(Errors(cli), 0u) << Joined(cli);
  EXPECT_TRUE(absl::StartsWith(cli[0], "client/cli_common|")) << cli[0];
}

// gRPC's own lines (GRPC_VERBOSITY=debug makes it talk) come through our
// log: JSON like the rest, component grpc/<file>.
TEST(LogFormat, GrpcLinesAreJsonLinesToo) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  ProcessOptions options;
  options.argv = With({BinPath("taskq"), "--master", cluster.address(), "--token-file",
                       cluster.token_file(), "queue", "list"},
                      kJsonDebug);
  options.env = cluster.ChildEnv();
  options.env["GRPC_VERBOSITY"] = "debug";
  options.output_dir = cluster.dir();
  options.name = "cli-grpc-debug";
  auto cli = Process::Start(options);
  ASSERT_TRUE(cli.ok()) << cli.status();
  ASSERT_EQ((*cli)->Wait(absl::Seconds(30)), 0) << (*cli)->Stderr();
  const auto lines = ParseJsonLines((*cli)->stderr_path());
  EXPECT_EQ(Errors(lines), 0u) << Joined(lines);
  EXPECT_TRUE(Has(lines, "grpc/")) << Joined(lines);
}

// The brief's rule: a token never reaches a log line, also at debug level
// and when a call is refused for it.
TEST(LogFormat, NoTokenInAnyLineAtDebugLevelAroundRefusals) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--log-level", "debug"}).ok());
  const std::string wrong_file = cluster.dir() + "/wrong-token";
  const std::string wrong = "not-the-master-token-0123456789abcdefghij";
  ASSERT_TRUE(WriteFile(wrong_file, wrong + "\n").ok());
  Process* good = cluster.StartWorker(With({"--queue", "jobs"}, kJsonDebug));
  Process* refused = cluster.StartWorkerWithToken(wrong_file, {"--log-level", "debug"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(good)) << good->Stderr();
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(refused->Stderr(), "refused"); },
                      absl::Seconds(20)))
      << refused->Stderr();
  CliResult ok = cluster.Cli({"--log-level", "debug", "submit", "--queue", "jobs", "--handler", "square", "--wait", "3"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  CliResult denied = cluster.CliWithToken(wrong_file, {"--log-level", "debug", "queue", "list"});
  EXPECT_NE(denied.exit_code, 0) << Describe(denied);
  CliResult denied_json =
      cluster.CliWithToken(wrong_file, With({"queue", "list"}, kJsonDebug));
  EXPECT_NE(denied_json.exit_code, 0) << Describe(denied_json);
  refused->Stop();
  good->Stop();
  cluster.master()->Stop();

  const std::string token(absl::StripAsciiWhitespace(ReadFile(cluster.token_file())));
  ASSERT_GE(token.size(), 16u);
  const std::vector<std::pair<std::string, std::string>> logs = {
      {"master", cluster.master()->Stderr() + cluster.master()->Stdout()},
      {"worker", good->Stderr()},
      {"refused worker", refused->Stderr()},
      {"cli", ok.err},
      {"refused cli", denied.err},
      {"refused cli (json)", denied_json.err}};
  for (const auto& [name, text] : logs) {
    if (name != "cli") {
      EXPECT_FALSE(text.empty()) << name;
    }
    EXPECT_FALSE(absl::StrContains(text, token)) << name << " logged the token";
    EXPECT_FALSE(absl::StrContains(text, wrong)) << name << " logged the wrong token";
    // Not even a part long enough to narrow a guess.
    EXPECT_FALSE(absl::StrContains(text, token.substr(0, 12))) << name;
  }
  EXPECT_TRUE(absl::StrContains(cluster.master()->Stderr(), "refused")) << "refusals visible";
}

// A worker credential that sends 1,000 reports on leases it never held: at
// debug level each refused report was one line. Now a call site writes at
// most 50 lines per 10 s, and then one summary line.
TEST(LogFormat, AFloodOfRefusedReportsMakesABoundedNumberOfLines) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start(kJsonDebug).ok());
  auto conn = cluster.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto stub = v1::TaskQueue::NewStub(conn->channel);
  {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, conn->token, absl::Seconds(60));
    auto stream = stub->Work(&ctx);
    v1::WorkRequest start;
    start.mutable_start()->add_queues("flood");
    start.mutable_start()->set_worker_id("flooder");
    ASSERT_TRUE(stream->Write(start));
    for (int m = 0; m < 10; ++m) {
      v1::WorkRequest req;
      for (int i = 0; i < 100; ++i) {
        auto* c = req.add_completions();
        c->set_task_id(1'000'000 + m * 100 + i);
        c->set_lease_id(1'000'000 + m * 100 + i);
      }
      ASSERT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
    v1::WorkResponse resp;
    int acks = 0;
    while (stream->Read(&resp)) acks += resp.acks_size();
    EXPECT_EQ(acks, 1000);
    stream->Finish();
  }
  // And 1,000 calls with a wrong token.
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.path() + "/wrong-token", "0123456789abcdef-not-the-token\n").ok());
  ConnectOptions options;
  options.master = cluster.address();
  options.token_file = dir.path() + "/wrong-token";
  auto wrong = taskq::Connect(options);
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  Client client(wrong->channel, wrong->token);
  int refused = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (int i = 0; i < 1000 && absl::Now() < deadline; ++i) {
    refused += absl::IsUnauthenticated(client.ListQueues().status());
  }
  EXPECT_EQ(refused, 1000);
  ASSERT_EQ(cluster.master()->Stop(), 0);

  const auto lines = ParseJsonLines(cluster.master()->stderr_path());
  EXPECT_EQ(Errors(lines), 0u) << Joined(lines);
  size_t report_lines = 0, refusal_lines = 0;
  for (const std::string& l : lines) {
    report_lines += absl::StrContains(l, "|report refused");
    refusal_lines += absl::StrContains(l, "|refused");
  }
  EXPECT_LE(report_lines, 50u) << Joined(lines);
  EXPECT_GE(report_lines, 1u) << "the first ones are still shown";
  EXPECT_TRUE(Has(lines, "similar lines suppressed in the last") &&
              Has(lines, "|suppressed=950,site=master/work_stream:"))
      << "the rest is summarised once\n" << Joined(lines);
  EXPECT_LE(refusal_lines, 10u) << Joined(lines);
  EXPECT_LE(lines.size(), 120u) << Joined(lines);
}

}  // namespace
}  // namespace taskq::testing
