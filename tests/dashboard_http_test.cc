// The web dashboard on the master's --http-listen (docs/DASHBOARD.md): its
// static files are served with their types and a strict CSP; its JSON API
// acts as the caller's credential through the gRPC service: no token 401,
// a reader reads but is refused actions (403), an admin requeues a dead
// task (checked with the CLI); cross-site forms and other origins are
// refused, and so are bodies over the limit. Off loopback the page stays
// public while /metrics needs a token and the API still checks its own.
#include <string>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

struct Reply {
  int status = -1;
  std::string body;
  httplib::Headers headers;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class Dashboard {
 public:
  explicit Dashboard(Cluster& cluster) : cluster_(cluster) {}

  absl::Status Start(std::vector<std::string> extra = {}) {
    const std::string port_file = cluster_.dir() + "/http-port";
    std::vector<std::string> args = {"--http-listen", "127.0.0.1:0", "--http-port-file",
                                     port_file};
    args.insert(args.end(), extra.begin(), extra.end());
    if (absl::Status s = cluster_.Start(args); !s.ok()) return s;
    std::string address;
    if (!WaitFor([&] {
          address = ReadFile(port_file);
          return !address.empty() && address.back() == '\n';
        }, absl::Seconds(20)) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(address.substr(address.rfind(':') + 1)),
                          &port_)) {
      return absl::UnavailableError("no --http-port-file");
    }
    return absl::OkStatus();
  }

  Reply Get(const std::string& path, const std::string& token = "") {
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    return Wrap(Client().Get(path.c_str(), headers));
  }

  Reply Post(const std::string& path, const std::string& body, const std::string& type,
             httplib::Headers headers = {}) {
    return Wrap(Client().Post(path.c_str(), headers, body, type.c_str()));
  }

  int port() const { return port_; }

 private:
  httplib::Client Client() {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(5);
    client.set_read_timeout(15);
    return client;
  }
  static Reply Wrap(const httplib::Result& res) {
    if (!res) return {};
    return {res->status, res->body, res->headers};
  }

  Cluster& cluster_;
  int port_ = 0;
};

httplib::Headers Bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

std::string MasterToken(Cluster& cluster) {
  return std::string(absl::StripAsciiWhitespace(ReadFile(cluster.token_file())));
}

std::string CreateCredential(Cluster& cluster, const std::string& name, const std::string& role) {
  CliResult made = cluster.Cli({"credential", "create", name, "--role", role});
  EXPECT_EQ(made.exit_code, 0) << Describe(made);
  return std::string(absl::StripAsciiWhitespace(made.out));
}

// Puts `payload` on `queue`, leases it and fails it for good: one dead task.
std::string MakeDeadTask(Cluster& cluster, const std::string& queue) {
  CliResult put = cluster.Cli({"put", queue, "doomed"});
  EXPECT_EQ(put.exit_code, 0) << Describe(put);
  CliResult got = cluster.Cli({"get", queue, "--lease"});
  EXPECT_EQ(got.exit_code, 0) << Describe(got);
  std::vector<std::string> f = absl::StrSplit(absl::StripAsciiWhitespace(got.out), '\t');
  EXPECT_EQ(f.size(), 3u) << got.out;
  if (f.size() != 3) return "";
  CliResult failed =
      cluster.Cli({"fail", f[0], "--lease", f[1], "--permanent", "--error", "boom"});
  EXPECT_EQ(failed.exit_code, 0) << Describe(failed);
  return f[0];
}

void ExpectSecurityHeaders(const Reply& r) {
  EXPECT_TRUE(absl::StartsWith(r.Header("Content-Security-Policy"), "default-src 'self'"))
      << r.Header("Content-Security-Policy");
  EXPECT_TRUE(absl::StrContains(r.Header("Content-Security-Policy"), "frame-ancestors 'none'"));
  EXPECT_EQ(r.Header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(r.Header("X-Frame-Options"), "DENY");
}

TEST(DashboardHttp, StaticFilesAreServedWithTheirTypesAndAStrictPolicy) {
  Cluster cluster;
  Dashboard dash(cluster);
  ASSERT_TRUE(dash.Start().ok());

  Reply page = dash.Get("/");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.Header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(page.body, "<script type=\"module\" src=\"/dashboard.js\">"));
  // Nothing from elsewhere: no CDN, no external font.
  EXPECT_FALSE(absl::StrContains(page.body, "http://")) << page.body;
  EXPECT_FALSE(absl::StrContains(page.body, "https://")) << page.body;
  ExpectSecurityHeaders(page);

  Reply js = dash.Get("/dashboard.js");
  ASSERT_EQ(js.status, 200);
  EXPECT_EQ(js.Header("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(js.body, "/api/")) << js.body.substr(0, 200);
  ExpectSecurityHeaders(js);
  Reply css = dash.Get("/dashboard.css");
  ASSERT_EQ(css.status, 200);
  EXPECT_EQ(css.Header("Content-Type"), "text/css; charset=utf-8");

  EXPECT_EQ(dash.Get("/nothing-here.js").status, 404);
  EXPECT_EQ(dash.Get("/metrics").status, 200);  // still there, beside the page
}

TEST(DashboardHttp, ApiActsAsTheCallersCredential) {
  Cluster cluster;
  Dashboard dash(cluster);
  ASSERT_TRUE(dash.Start().ok());
  ASSERT_EQ(cluster.Cli({"queue", "create", "jobs"}).exit_code, 0);
  const std::string dead_id = MakeDeadTask(cluster, "jobs");
  ASSERT_FALSE(dead_id.empty());
  ASSERT_EQ(cluster.StatNumber("jobs", "dead"), 1);
  const std::string reader = CreateCredential(cluster, "viewer", "reader");
  const std::string admin = CreateCredential(cluster, "operator", "admin");

  // No token, a wrong one: 401 with gRPC's message, on loopback too.
  Reply none = dash.Get("/api/ListQueues");
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_TRUE(absl::StrContains(none.body, "\"code\":\"UNAUTHENTICATED\"")) << none.body;
  EXPECT_TRUE(absl::StrContains(none.body, "missing token")) << none.body;
  EXPECT_EQ(none.Header("Cache-Control"), "no-store");
  EXPECT_EQ(none.Header("Content-Type"), "application/json; charset=utf-8");
  EXPECT_EQ(dash.Get("/api/ListQueues", "tq1.wrong.token").status, 401);

  // A reader reads queues and tasks.
  Reply queues = dash.Get("/api/ListQueues", reader);
  ASSERT_EQ(queues.status, 200) << queues.body;
  EXPECT_TRUE(absl::StrContains(queues.body, "\"name\":\"jobs\"")) << queues.body;
  EXPECT_TRUE(absl::StrContains(queues.body, "\"dead\":\"1\"")) << queues.body;
  ExpectSecurityHeaders(queues);
  EXPECT_EQ(queues.Header("Cache-Control"), "no-store");
  // Dead letters are for admins (the role table): gRPC's refusal.
  Reply hidden = dash.Get("/api/ListDead?queue=jobs", reader);
  EXPECT_EQ(hidden.status, 403) << hidden.body;
  EXPECT_TRUE(absl::StrContains(hidden.body, "may not list dead tasks")) << hidden.body;
  Reply dead = dash.Get("/api/ListDead?queue=jobs", admin);
  ASSERT_EQ(dead.status, 200) << dead.body;
  EXPECT_TRUE(absl::StrContains(dead.body, absl::StrCat("\"id\":\"", dead_id, "\"")));
  EXPECT_TRUE(absl::StrContains(dead.body, "\"last_error\":\"boom\"")) << dead.body;
  EXPECT_TRUE(absl::StrContains(dead.body, "\"payload\":\"\"")) << "pages carry no payload";
  Reply task = dash.Get("/api/GetTask?task_id=" + dead_id, reader);
  ASSERT_EQ(task.status, 200) << task.body;
  EXPECT_TRUE(absl::StrContains(task.body, "\"state\":\"TASK_STATE_DEAD\"")) << task.body;
  EXPECT_TRUE(absl::StrContains(task.body, "\"how\":\"failed\"")) << task.body;
  EXPECT_EQ(dash.Get("/api/GetTask?task_id=999999", reader).status, 404);
  Reply bad = dash.Get("/api/ListDead?queue=jobs&limit=lots", admin);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_TRUE(absl::StrContains(bad.body, "limit")) << bad.body;
  EXPECT_EQ(dash.Get("/api/DeleteQueue?queue=jobs", admin).status, 404) << "not exposed";

  // A reader may not requeue: gRPC's refusal, and nothing moved.
  const std::string body = R"({"queue":"jobs","task_id":")" + dead_id + "\"}";
  Reply refused = dash.Post("/api/RequeueDead", body, "application/json", Bearer(reader));
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_TRUE(absl::StrContains(refused.body, "PERMISSION_DENIED")) << refused.body;
  EXPECT_EQ(cluster.StatNumber("jobs", "dead"), 1);

  // An admin may: the task is ready again.
  Reply requeued = dash.Post("/api/RequeueDead", body, "application/json", Bearer(admin));
  ASSERT_EQ(requeued.status, 200) << requeued.body;
  EXPECT_TRUE(absl::StrContains(requeued.body, "\"requeued\":\"1\"")) << requeued.body;
  EXPECT_EQ(cluster.StatNumber("jobs", "dead"), 0);
  EXPECT_EQ(cluster.StatNumber("jobs", "ready"), 1);
  CliResult dlq = cluster.Cli({"dlq", "list", "jobs"});
  EXPECT_FALSE(absl::StrContains(dlq.out, "boom")) << dlq.out;

  // Both are in the audit log under their credentials, as gRPC calls are.
  const std::string audit = ReadFile(cluster.data_dir() + "/audit.log");
  EXPECT_TRUE(absl::StrContains(audit, "viewer")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "operator")) << audit;
  // No token reached the master's log or the audit log.
  for (const std::string& secret : {reader, admin, MasterToken(cluster)}) {
    EXPECT_FALSE(absl::StrContains(cluster.master()->Stderr(), secret));
    EXPECT_FALSE(absl::StrContains(audit, secret));
  }
}

TEST(DashboardHttp, ConnectedWorkersAreListed) {
  Cluster cluster;
  Dashboard dash(cluster);
  ASSERT_TRUE(dash.Start().ok());
  Process* worker = cluster.StartWorker({"--queue", "thumbnails", "--id", "thumbnailer"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();
  const std::string reader = CreateCredential(cluster, "viewer", "reader");
  Reply workers;
  ASSERT_TRUE(WaitFor([&] {
    workers = dash.Get("/api/ListWorkers", reader);
    return absl::StrContains(workers.body, "\"worker_id\":\"thumbnailer\"");
  }, absl::Seconds(20))) << workers.status << " " << workers.body;
  EXPECT_EQ(workers.status, 200);
  EXPECT_TRUE(absl::StrContains(workers.body, "\"queues\":[\"thumbnails\"]")) << workers.body;
}

TEST(DashboardHttp, ActionsRefuseWhatACrossSitePageCouldSend) {
  Cluster cluster;
  Dashboard dash(cluster);
  ASSERT_TRUE(dash.Start().ok());
  ASSERT_EQ(cluster.Cli({"queue", "create", "jobs"}).exit_code, 0);
  ASSERT_FALSE(MakeDeadTask(cluster, "jobs").empty());
  const std::string admin = MasterToken(cluster);

  // A form's content types: 415, even with a valid token (a multipart
  // body that is not one is refused by cpp-httplib already: 400).
  for (const std::string type : {"application/x-www-form-urlencoded", "text/plain"}) {
    Reply r = dash.Post("/api/PurgeDead", R"({"queue":"jobs"})", type, Bearer(admin));
    EXPECT_EQ(r.status, 415) << type << ": " << r.body;
  }
  const int multipart = dash.Post("/api/PurgeDead", R"({"queue":"jobs"})",
                                  "multipart/form-data; boundary=x", Bearer(admin)).status;
  EXPECT_TRUE(multipart == 415 || multipart == 400) << multipart;
  // Another origin: 403.
  httplib::Headers other = Bearer(admin);
  other.emplace("Origin", "http://evil.example");
  EXPECT_EQ(dash.Post("/api/PurgeDead", R"({"queue":"jobs"})", "application/json", other).status,
            403);
  // An action by GET: 405.
  EXPECT_EQ(dash.Get("/api/PurgeDead?queue=jobs", admin).status, 405);
  // A body over the limit: 413.
  const std::string big = R"({"queue":")" + std::string(8192, 'q') + "\"}";
  EXPECT_EQ(dash.Post("/api/PurgeDead", big, "application/json", Bearer(admin)).status, 413);
  // Without a token: 401.
  EXPECT_EQ(dash.Post("/api/PurgeDead", R"({"queue":"jobs"})", "application/json").status, 401);
  EXPECT_EQ(cluster.StatNumber("jobs", "dead"), 1) << "nothing was purged";

  // The page's own request (same origin, JSON, token) goes through.
  httplib::Headers same = Bearer(admin);
  same.emplace("Origin", absl::StrCat("http://127.0.0.1:", dash.port()));
  Reply ok = dash.Post("/api/PurgeDead", R"({"queue":"jobs"})", "application/json", same);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(cluster.StatNumber("jobs", "dead"), 0);
}

TEST(DashboardHttp, OffLoopbackThePageIsPublicAndTheApiStillNeedsAToken) {
  Cluster cluster;
  const std::string port_file = cluster.dir() + "/http-port";
  ASSERT_TRUE(cluster.Start({"--http-listen", "0.0.0.0:0", "--insecure", "--http-port-file",
                             port_file}).ok());
  std::string address;
  ASSERT_TRUE(WaitFor([&] {
    address = ReadFile(port_file);
    return !address.empty() && address.back() == '\n';
  }, absl::Seconds(20)));
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(address.substr(address.rfind(':') + 1)),
                               &port));
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(15);
  auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 401);
  auto api = client.Get("/api/ListQueues");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
  EXPECT_TRUE(absl::StrContains(api->body, "UNAUTHENTICATED")) << api->body;
  auto with = client.Get("/api/ListQueues", Bearer(MasterToken(cluster)));
  ASSERT_TRUE(with);
  EXPECT_EQ(with->status, 200) << with->body;
}

}  // namespace
}  // namespace taskq::testing
