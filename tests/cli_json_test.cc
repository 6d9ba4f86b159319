// `--json` on the CLI's read verbs (docs/CLI.md, "JSON output"): each
// verb's output is parsed by Python's json module (strict: no raw control
// characters in strings) and its fields checked, with payloads and errors
// that hold quotes, backslashes, control characters, terminal escapes and
// bytes that are not UTF-8. Errors still go to stderr with the usual exit
// codes, and the JSON is the same on a terminal as through a pipe.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// Quotes, backslashes, C0 controls, an ESC sequence, CR, DEL, the 8-bit CSI
// (U+009B), a bidi override and valid non-ASCII text.
const std::string kHostileText =
    "q\"uo\\te\x01\x1b[2J\rb\x7f\xc2\x9b\xe2\x80\xae caf\xc3\xa9 \xe2\x9c\x93";
// Not UTF-8 (a lone 0xff, a NUL, a truncated sequence).
const std::string kBinary = std::string("\xff\x00" "bin\xe2\x9c", 7);

class CliJson : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
  }

  std::string Py(const std::string& json, const std::string& expr, bool lines = false) {
    return cluster_.PyJson(json, expr, lines);
  }

  // Puts `payload` on `queue` (through stdin: it may hold a NUL); returns its id.
  std::string Put(const std::string& queue, const std::string& payload,
                  std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"put", queue};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("-");
    CliResult r = cluster_.Cli(args, payload + "\n");
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return Lines(r.out).empty() ? "" : Lines(r.out)[0];
  }

  Cluster cluster_;
};

TEST_F(CliJson, QueueListAndStatsAreOneDocument) {
  CliResult c = cluster_.Cli({"queue", "create", "jobs", "--kind", "lifo", "--maxsize", "2"});
  ASSERT_EQ(c.exit_code, 0) << Describe(c);
  Put("jobs", "a");
  Put("jobs", "b");
  Put("other", "x");

  CliResult list = cluster_.Cli({"queue", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(Lines(list.out).size(), 1u) << list.out;
  EXPECT_EQ(Py(list.out, "[q['name'] for q in d['queues']]"), R"(["jobs", "other"])");
  EXPECT_EQ(Py(list.out, "[q['ready'] for q in d['queues']]"), "[2, 1]");

  CliResult stats = cluster_.Cli({"queue", "stats", "jobs", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << Describe(stats);
  EXPECT_EQ(Py(stats.out, "[d['name'], d['kind'], d['maxsize'], d['ready'], d['qsize'], "
                          "d['full'], d['empty'], d['total_put'], d['dead_letter']]"),
            R"(["jobs", "QUEUE_KIND_LIFO", 2, 2, 2, true, false, 2, "jobs"])");

  // An error is a message on stderr and an exit code, with nothing on stdout.
  CliResult missing = cluster_.Cli({"queue", "stats", "nope", "--json"});
  EXPECT_EQ(missing.exit_code, 5) << Describe(missing);
  EXPECT_EQ(missing.out, "");
  EXPECT_TRUE(absl::StrContains(missing.err, "taskq: ")) << missing.err;
}

TEST_F(CliJson, GetPrintsJsonLinesWithExactPayloads) {
  Put("q", kHostileText, {"--header", "k=v\"\\"});
  Put("q", kBinary);
  CliResult got = cluster_.Cli({"get", "q", "--max", "2", "--nowait", "--json"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  ASSERT_EQ(Lines(got.out).size(), 2u) << got.out;
  EXPECT_EQ(Py(got.out, "d[0]['payload']", true), kHostileText);
  EXPECT_EQ(Py(got.out, "d[0]['headers']", true), R"({"k": "v\"\\"})");
  EXPECT_EQ(Py(got.out, "'payload' in d[1]", true), "false");
  EXPECT_EQ(Py(got.out, "base64.b64decode(d[1]['payload_base64'])", true), kBinary);
  EXPECT_EQ(Py(got.out, "[m['queue'] for m in d]", true), R"(["q", "q"])");
  EXPECT_EQ(Py(got.out, "'lease_id' in d[0]", true), "false");

  // Empty queue: exit 3, nothing on stdout.
  CliResult empty = cluster_.Cli({"get", "q", "--nowait", "--json"});
  EXPECT_EQ(empty.exit_code, 3) << Describe(empty);
  EXPECT_EQ(empty.out, "");
}

TEST_F(CliJson, GetLeaseJsonCarriesTheLeaseToSettleWith) {
  const std::string id = Put("q", "work");
  CliResult got = cluster_.Cli({"get", "q", "--lease", "--nowait", "--json"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(Py(got.out, "d['id']"), id);
  const std::string lease = Py(got.out, "d['lease_id']");
  EXPECT_NE(Py(got.out, "d['lease_deadline_unix_ms'] > 0"), "false");
  CliResult done = cluster_.Cli({"complete", id, "--lease", lease, "ok"});
  EXPECT_EQ(done.exit_code, 0) << Describe(done);
}

TEST_F(CliJson, StatusDlqAndResultsOfADeadTask) {
  const std::string id = Put("q", kHostileText, {"--reply-to", "r"});
  CliResult leased = cluster_.Cli({"get", "q", "--lease", "--nowait", "--json"});
  ASSERT_EQ(leased.exit_code, 0) << Describe(leased);
  const std::string lease = Py(leased.out, "d['lease_id']");
  const std::string error = "boom " + kHostileText;
  CliResult fail =
      cluster_.Cli({"fail", id, "--lease", lease, "--permanent", "--error", error});
  ASSERT_EQ(fail.exit_code, 0) << Describe(fail);

  CliResult status = cluster_.Cli({"status", id, "--json"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_EQ(Lines(status.out).size(), 1u);
  EXPECT_EQ(Py(status.out, "[d['id'], d['state'], d['origin_queue'], d['reply_to']]"),
            absl::StrCat("[", id, R"(, "TASK_STATE_DEAD", "q", "r"])"));
  EXPECT_EQ(Py(status.out, "d['last_error']"), error);
  EXPECT_EQ(Py(status.out, "d['payload']"), kHostileText);
  EXPECT_EQ(Py(status.out, "[h['how'] for h in d['history']]"), R"(["failed"])");
  EXPECT_EQ(Py(status.out, "d['history'][0]['error']"), error);

  CliResult show = cluster_.Cli({"dlq", "show", "q", id, "--json"});
  ASSERT_EQ(show.exit_code, 0) << Describe(show);
  EXPECT_EQ(show.out, status.out);

  CliResult list = cluster_.Cli({"dlq", "list", "q", "--json"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(Py(list.out, "[t['id'] for t in d]", true), absl::StrCat("[", id, "]"));
  EXPECT_EQ(Py(list.out, "d[0]['last_error']", true), error);

  // The FAILED result message, as get and results print it.
  CliResult result = cluster_.Cli({"get", "r", "--nowait", "--json"});
  ASSERT_EQ(result.exit_code, 0) << Describe(result);
  EXPECT_EQ(Py(result.out, "[d[0]['result_of'], d[0]['outcome']]", true),
            absl::StrCat("[", id, R"(, "OUTCOME_FAILED"])"));

  // Unknown id: exit 5, the message on stderr, nothing on stdout.
  CliResult unknown = cluster_.Cli({"status", "999999", "--json"});
  EXPECT_EQ(unknown.exit_code, 5) << Describe(unknown);
  EXPECT_EQ(unknown.out, "");
  EXPECT_FALSE(unknown.err.empty());
}

TEST_F(CliJson, CredentialListNamesRolesAndNoSecret) {
  CliResult made = cluster_.Cli({"credential", "create", "ingest", "--role", "producer",
                                 "--queues", "img.*"});
  ASSERT_EQ(made.exit_code, 0) << Describe(made);
  const std::string token = Lines(made.out).empty() ? "" : Lines(made.out)[0];
  CliResult list = cluster_.Cli({"credential", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(Py(list.out, "[[c['role'], c['queues'], c['kind']] for c in d['credentials'] "
                         "if c['name'] == 'ingest']"),
            R"([["ROLE_PRODUCER", ["img.*"], "CREDENTIAL_KIND_TOKEN"]])");
  ASSERT_FALSE(token.empty());
  EXPECT_FALSE(absl::StrContains(list.out, token)) << list.out;
}

TEST_F(CliJson, SameJsonOnATerminal) {
  const std::string id = Put("q", kHostileText);
  CliResult piped = cluster_.Cli({"status", id, "--json"});
  ASSERT_EQ(piped.exit_code, 0) << Describe(piped);
  CliResult tty = cluster_.CliOnTerminal({"status", id, "--json"});
  ASSERT_EQ(tty.exit_code, 0) << tty.out;
  EXPECT_EQ(tty.out, piped.out);
  for (char c : {'\x1b', '\r', '\x07', '\x7f'}) {
    EXPECT_EQ(tty.out.find(c), std::string::npos) << static_cast<int>(c);
  }
}

TEST_F(CliJson, SubmitWaitAndResultsPrintEveryResultAsAJsonLine) {
  ASSERT_NE(cluster_.StartWorker({"--queue", "tasks"}), nullptr);
  CliResult r = cluster_.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", "--wait", "--json", "3", "x", "4"});
  EXPECT_EQ(r.exit_code, 7) << Describe(r);  // "x" is not a number
  ASSERT_EQ(Lines(r.out).size(), 3u) << Describe(r);
  EXPECT_EQ(Py(r.out, "sorted(m['payload'] for m in d if m['outcome'] == 'OUTCOME_OK')", true),
            R"(["3 * 3 = 9", "4 * 4 = 16"])");
  EXPECT_EQ(Py(r.out, "[m['outcome'] for m in d].count('OUTCOME_FAILED')", true), "1");
  EXPECT_EQ(Py(r.out, "all(m['result_of'] > 0 for m in d)", true), "true");
  // The failure is in the JSON, not repeated as a line on stderr; the
  // summary still is.
  EXPECT_FALSE(absl::StrContains(r.err, "failed: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "1 failed of 3 tasks")) << r.err;

  // `results --json` reads a reply queue the same way.
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "square",
                                "--reply-to", "replies", "5"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult results = cluster_.Cli({"results", "replies", "--json", "--timeout", "20"});
  EXPECT_EQ(results.exit_code, 0) << Describe(results);
  EXPECT_EQ(Py(results.out, "[m['payload'] for m in d]", true), R"(["5 * 5 = 25"])");
}

}  // namespace
}  // namespace taskq::testing
