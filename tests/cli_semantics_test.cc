// Queue semantics of issue 5 through the `taskq` CLI against the real
// master: delayed tasks (--delay, --not-before), dedup keys, cancel (a
// waiting `submit --wait` gets a CANCELLED result), `taskq status`, the
// lease verbs (get --lease, fail, release, complete), `queue update`,
// `queue shutdown` with its exit code 9, the new stats counters and
// Python's qsize/empty/full, and `--help` on every verb. The wire-level
// rules are tested in queue_semantics_test.cc and the engine's unit tests;
// this checks what a CLI user sees: output, messages and exit codes.
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

using Fields = std::map<std::string, std::string>;

// `key: value` lines (up to "history:") of `taskq status` and friends.
Fields ParseFields(const std::string& out) {
  Fields fields;
  for (const std::string& line : Lines(out)) {
    if (absl::StartsWith(line, "history:")) break;
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
    fields[kv.first] = std::string(absl::StripLeadingAsciiWhitespace(kv.second));
  }
  return fields;
}

// The attempt lines after "history:".
std::vector<std::string> HistoryLines(const std::string& out) {
  std::vector<std::string> lines = Lines(out);
  std::vector<std::string> history;
  bool in_history = false;
  for (const std::string& line : lines) {
    if (in_history) history.push_back(line);
    if (absl::StartsWith(line, "history:")) in_history = true;
  }
  return history;
}

std::string Trimmed(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

class CliSemantics : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
  }

  // Runs the CLI and expects exit 0; returns stdout.
  std::string Ok(std::vector<std::string> args) {
    CliResult r = cluster_.Cli(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return r.out;
  }

  Fields Status(const std::string& id) { return ParseFields(Ok({"status", id})); }

  Cluster cluster_;
};

TEST_F(CliSemantics, DelayedTaskIsNotHandedOutBeforeItsTime) {
  const absl::Time start = absl::Now();
  std::string id = Trimmed(Ok({"put", "later", "--delay", "1", "x"}));
  ASSERT_FALSE(id.empty());

  Fields status = Status(id);
  EXPECT_EQ(status["state"], "delayed");
  EXPECT_FALSE(status["not_before"].empty());
  EXPECT_EQ(status["payload"], "\"x\"");
  CliResult nothing = cluster_.Cli({"get", "later", "--nowait"});
  EXPECT_EQ(nothing.exit_code, 3) << Describe(nothing);
  EXPECT_EQ(cluster_.StatNumber("later", "delayed"), 1);
  EXPECT_EQ(cluster_.StatNumber("later", "ready"), 0);
  EXPECT_EQ(cluster_.Stats("later")["qsize"], "1");  // Python's qsize counts it

  // The blocking get is the condition wait: it returns when the task is due.
  CliResult got = cluster_.Cli({"get", "later", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "x\n");
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Seconds(1));
  EXPECT_LT(waited, absl::Seconds(15));
  EXPECT_EQ(Status(id)["state"], "done");
}

TEST_F(CliSemantics, NotBeforeTakesRfc3339AndUnixSeconds) {
  const absl::Time at = absl::Now() + absl::Milliseconds(800);
  const std::string rfc3339 = absl::FormatTime(absl::RFC3339_full, at, absl::UTCTimeZone());
  std::string id = Trimmed(Ok({"put", "nb", "--not-before", rfc3339, "a"}));
  EXPECT_EQ(Status(id)["state"], "delayed");
  CliResult got = cluster_.Cli({"get", "nb", "--timeout", "20"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "a\n");
  EXPECT_GE(absl::Now(), at);

  // Unix seconds in the past: ready at once.
  Ok({"put", "nb", "--not-before", "1000000000", "b"});
  CliResult now = cluster_.Cli({"get", "nb", "--nowait"});
  EXPECT_EQ(now.exit_code, 0) << Describe(now);
  EXPECT_EQ(now.out, "b\n");

  CliResult bad = cluster_.Cli({"put", "nb", "--not-before", "next tuesday", "c"});
  EXPECT_EQ(bad.exit_code, 2) << Describe(bad);
  EXPECT_TRUE(absl::StrContains(bad.err, "RFC 3339")) << bad.err;
  CliResult too_far = cluster_.Cli({"put", "nb", "--delay", "40000000", "c"});
  EXPECT_EQ(too_far.exit_code, 2) << Describe(too_far);
  EXPECT_TRUE(absl::StrContains(too_far.err, "365 days")) << too_far.err;
}

TEST_F(CliSemantics, DedupKeyReturnsTheSameIdWhileTheTaskIsNotDone) {
  std::string first = Trimmed(Ok({"put", "d", "--dedup-key", "order-17", "a"}));
  CliResult again = cluster_.Cli({"put", "d", "--dedup-key", "order-17", "b"});
  ASSERT_EQ(again.exit_code, 0) << Describe(again);
  EXPECT_EQ(Trimmed(again.out), first);
  EXPECT_TRUE(absl::StrContains(again.err, absl::StrCat("task ", first, " already exists")))
      << again.err;
  EXPECT_EQ(cluster_.StatNumber("d", "ready"), 1);
  EXPECT_EQ(Status(first)["dedup_key"], "\"order-17\"");

  // Once taken (done), the key is free again.
  CliResult taken = cluster_.Cli({"get", "d", "--nowait"});
  EXPECT_EQ(taken.out, "a\n") << Describe(taken);
  std::string second = Trimmed(Ok({"put", "d", "--dedup-key", "order-17", "c"}));
  EXPECT_NE(second, first);

  // Several payloads: {} makes one key per payload; equal payloads share one.
  std::vector<std::string> ids =
      Lines(Ok({"put", "d", "--dedup-key", "sq-{}", "1", "2", "1"}));
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], ids[2]);
  EXPECT_NE(ids[0], ids[1]);

  CliResult ambiguous = cluster_.Cli({"put", "d", "--dedup-key", "same", "1", "2"});
  EXPECT_EQ(ambiguous.exit_code, 2) << Describe(ambiguous);
  EXPECT_TRUE(absl::StrContains(ambiguous.err, "{}")) << ambiguous.err;
}

TEST_F(CliSemantics, CancelGivesAWaitingSubmitACancelledResult) {
  // Nobody serves "idle": the task stays ready until cancelled.
  std::unique_ptr<Process> submit = cluster_.StartCli(
      {"submit", "--queue", "idle", "--handler", "square", "--wait", "--dedup-key", "sq-{}", "5"});
  ASSERT_NE(submit, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("idle", "ready") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)));
  // The same dedup key finds the submitted task's id.
  CliResult found = cluster_.Cli({"put", "idle", "--handler", "square", "--dedup-key", "sq-5", "5"});
  ASSERT_EQ(found.exit_code, 0) << Describe(found);
  const std::string id = Trimmed(found.out);

  CliResult cancel = cluster_.Cli({"cancel", id});
  ASSERT_EQ(cancel.exit_code, 0) << Describe(cancel);
  EXPECT_EQ(cancel.out, absl::StrCat(id, " cancelled (was ready)\n"));

  std::optional<int> exit_code = submit->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit_code.has_value()) << "submit --wait did not return after the cancel";
  EXPECT_EQ(*exit_code, 7) << submit->Stderr();
  EXPECT_TRUE(absl::StrContains(submit->Stderr(), absl::StrCat("task ", id, " cancelled")))
      << submit->Stderr();
  EXPECT_EQ(submit->Stdout(), "");

  EXPECT_EQ(Status(id)["state"], "cancelled");
  EXPECT_EQ(cluster_.StatNumber("idle", "total_cancelled"), 1);
  EXPECT_EQ(cluster_.StatNumber("idle", "unfinished"), 0);

  // Cancelling again, or an unknown id: refused with the master's message.
  CliResult twice = cluster_.Cli({"cancel", id});
  EXPECT_EQ(twice.exit_code, 5) << Describe(twice);
  EXPECT_TRUE(absl::StrContains(twice.err, "already cancelled")) << twice.err;
  CliResult unknown = cluster_.Cli({"cancel", "999999"});
  EXPECT_EQ(unknown.exit_code, 5) << Describe(unknown);
  EXPECT_TRUE(absl::StrContains(unknown.err, "999999")) << unknown.err;

  // A delayed task; several ids at once, the unknown one reported.
  std::string delayed = Trimmed(Ok({"put", "idle", "--delay", "300", "later"}));
  CliResult several = cluster_.Cli({"cancel", delayed, "999998"});
  EXPECT_EQ(several.exit_code, 5) << Describe(several);
  EXPECT_EQ(several.out, absl::StrCat(delayed, " cancelled (was delayed)\n"));
  EXPECT_EQ(cluster_.StatNumber("idle", "delayed"), 0);
}

TEST_F(CliSemantics, CancelOfALeasedTaskStopsItsWorker) {
  Ok({"queue", "create", "work", "--lease", "1.5"});
  Process* worker = cluster_.StartWorker({"--queue", "work", "--id", "w1"});
  ASSERT_TRUE(cluster_.WaitWorkerConnected(worker)) << worker->Stderr();
  std::string id =
      Trimmed(Ok({"submit", "--queue", "work", "--handler", "sleep", "--reply-to", "res", "60"}));
  ASSERT_TRUE(WaitFor([&] { return Status(id)["state"] == "leased"; }, absl::Seconds(20),
                      absl::Milliseconds(20)));
  EXPECT_EQ(Status(id)["worker"], "w1");

  CliResult cancel = cluster_.Cli({"cancel", id});
  EXPECT_EQ(cancel.out, absl::StrCat(id, " cancelled (was leased)\n")) << Describe(cancel);
  // The CANCELLED result is there at once; the worker stops the handler
  // when its next heartbeat (every lease/3) is answered "cancelled".
  CliResult result = cluster_.Cli({"get", "res", "--show-ids", "--nowait"});
  EXPECT_TRUE(absl::StartsWith(result.out, absl::StrCat(id, "\tCANCELLED"))) << Describe(result);
  EXPECT_TRUE(WaitFor(
      [&] {
        for (const std::string& line : Lines(worker->Stderr())) {
          if (absl::StrContains(line, absl::StrCat("task ", id, " ")) &&
              absl::StrContains(line, "cancel")) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(20), absl::Milliseconds(20)))
      << worker->Stderr();
  EXPECT_EQ(cluster_.StatNumber("work", "total_completed"), 0);
  EXPECT_EQ(cluster_.StatNumber("work", "leased"), 0);
  EXPECT_EQ(Status(id)["state"], "cancelled");
}

TEST_F(CliSemantics, LeaseVerbsAndStatusShowAttemptsAndLastError) {
  Ok({"queue", "create", "jobs", "--max-attempts", "3", "--backoff", "0.001", "--lease", "30"});
  std::string id = Trimmed(Ok({"put", "jobs", "x"}));

  std::vector<std::string> got = absl::StrSplit(Trimmed(Ok({"get", "jobs", "--lease"})), '\t');
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], id);
  EXPECT_EQ(got[2], "x");
  const std::string lease = got[1];
  Fields leased = Status(id);
  EXPECT_EQ(leased["state"], "leased");
  EXPECT_EQ(leased["attempts"], "1");
  EXPECT_FALSE(leased["worker"].empty());

  Ok({"fail", id, "--lease", lease, "--error", "disk full"});
  CliResult again = cluster_.Cli({"fail", id, "--lease", lease, "--error", "twice"});
  EXPECT_EQ(again.exit_code, 5) << Describe(again);
  EXPECT_TRUE(absl::StrContains(again.err, "lease")) << again.err;

  // Back after the 1 ms backoff, with the failure on record.
  ASSERT_TRUE(WaitFor([&] { return Status(id)["state"] == "ready"; }, absl::Seconds(10),
                      absl::Milliseconds(20)));
  CliResult status = cluster_.Cli({"status", id});
  Fields fields = ParseFields(status.out);
  EXPECT_EQ(fields["attempts"], "1");
  EXPECT_EQ(fields["last_error"], "disk full");
  std::vector<std::string> history = HistoryLines(status.out);
  ASSERT_EQ(history.size(), 1u) << status.out;
  EXPECT_TRUE(absl::StrContains(history[0], "failed")) << history[0];
  EXPECT_TRUE(absl::StrContains(history[0], "disk full")) << history[0];
  CliResult json = cluster_.Cli({"status", id, "--json"});
  EXPECT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_TRUE(absl::StrContains(json.out, "\"state\":\"TASK_STATE_READY\"")) << json.out;
  EXPECT_TRUE(absl::StrContains(json.out, "\"last_error\":\"disk full\"")) << json.out;

  // Release with a delay: delayed, attempts not counted; the lease is gone.
  got = absl::StrSplit(Trimmed(Ok({"get", "jobs", "--lease"})), '\t');
  ASSERT_EQ(got.size(), 3u);
  Ok({"release", id, "--lease", got[1], "--delay", "300"});
  Fields released = Status(id);
  EXPECT_EQ(released["state"], "delayed");
  CliResult late = cluster_.Cli({"complete", id, "--lease", got[1], "too late"});
  EXPECT_EQ(late.exit_code, 5) << Describe(late);
  EXPECT_TRUE(absl::StrContains(late.err, "lease lost")) << late.err;
  CliResult cancel = cluster_.Cli({"cancel", id});
  EXPECT_EQ(cancel.out, absl::StrCat(id, " cancelled (was delayed)\n")) << Describe(cancel);

  // Complete: one result on reply_to, named by the task.
  std::string done = Trimmed(Ok({"put", "jobs", "--reply-to", "res", "y"}));
  got = absl::StrSplit(Trimmed(Ok({"get", "jobs", "--lease"})), '\t');
  ASSERT_EQ(got.size(), 3u);
  Ok({"complete", done, "--lease", got[1], "the result"});
  CliResult result = cluster_.Cli({"get", "res", "--show-ids", "--nowait"});
  EXPECT_EQ(result.out, absl::StrCat(done, "\tthe result\n")) << Describe(result);
  EXPECT_EQ(Status(done)["state"], "done");

  CliResult unknown = cluster_.Cli({"status", "999999"});
  EXPECT_EQ(unknown.exit_code, 5) << Describe(unknown);
  EXPECT_TRUE(absl::StrContains(unknown.err, "unknown task")) << unknown.err;
}

TEST_F(CliSemantics, LateCompletionAfterTheLeaseExpiredIsRefused) {
  Ok({"queue", "create", "short", "--lease", "0.2", "--backoff", "0.001"});
  std::string id = Trimmed(Ok({"put", "short", "--reply-to", "res", "x"}));
  std::vector<std::string> first = absl::StrSplit(Trimmed(Ok({"get", "short", "--lease"})), '\t');
  ASSERT_EQ(first.size(), 3u);
  // The second holder's lease is long, so that its completion is in time
  // however slow the machine (leases take the queue's setting when granted).
  Ok({"queue", "update", "short", "--lease", "60"});
  // Expired and handed out again (a second consumer holds it now).
  std::vector<std::string> second;
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = cluster_.Cli({"get", "short", "--lease", "--timeout", "1"});
        if (r.exit_code != 0) return false;
        second = absl::StrSplit(Trimmed(r.out), '\t');
        return true;
      },
      absl::Seconds(20)));
  ASSERT_EQ(second.size(), 3u);
  EXPECT_EQ(second[0], id);
  CliResult late = cluster_.Cli({"complete", id, "--lease", first[1], "late"});
  EXPECT_EQ(late.exit_code, 5) << Describe(late);
  EXPECT_TRUE(absl::StrContains(late.err, "lease lost")) << late.err;
  Ok({"complete", id, "--lease", second[1], "on time"});
  // Exactly one result: the current holder's.
  CliResult results = cluster_.Cli({"get", "res", "--max", "10", "--nowait"});
  EXPECT_EQ(results.out, "on time\n") << Describe(results);
  Fields status = Status(id);
  EXPECT_EQ(status["attempts"], "2");
  EXPECT_TRUE(absl::StrContains(status["last_error"], "expired")) << status["last_error"];
}

TEST_F(CliSemantics, QueueUpdateChangesMaxAttempts) {
  Ok({"queue", "create", "u", "--max-attempts", "5", "--backoff", "0.001"});
  CliResult updated = cluster_.Cli({"queue", "update", "u", "--max-attempts", "1"});
  ASSERT_EQ(updated.exit_code, 0) << Describe(updated);
  Fields config = ParseFields(updated.out);
  EXPECT_EQ(config["max_attempts"], "1");
  EXPECT_EQ(config["backoff_ms"], "1");  // unchanged
  EXPECT_EQ(cluster_.Stats("u")["max_attempts"], "1");

  // One failure is now the last attempt: the task goes to the DLQ at once.
  std::string id = Trimmed(Ok({"put", "u", "x"}));
  std::vector<std::string> got = absl::StrSplit(Trimmed(Ok({"get", "u", "--lease"})), '\t');
  ASSERT_EQ(got.size(), 3u);
  Ok({"fail", id, "--lease", got[1], "--error", "nope"});
  EXPECT_EQ(cluster_.StatNumber("u", "dead"), 1);
  EXPECT_EQ(Status(id)["state"], "dead");

  // Only the given flags change; the dead letters can go elsewhere.
  Ok({"queue", "update", "u", "--dead-letter", "u.dlq", "--lease", "2"});
  auto stats = cluster_.Stats("u");
  EXPECT_EQ(stats["dead_letter"], "u.dlq");
  EXPECT_EQ(stats["lease_ms"], "2000");
  EXPECT_EQ(stats["max_attempts"], "1");

  CliResult none = cluster_.Cli({"queue", "update", "u"});
  EXPECT_EQ(none.exit_code, 2) << Describe(none);
  CliResult unknown = cluster_.Cli({"queue", "update", "nope", "--max-attempts", "2"});
  EXPECT_EQ(unknown.exit_code, 5) << Describe(unknown);
  EXPECT_TRUE(absl::StrContains(unknown.err, "does not exist")) << unknown.err;
  CliResult out_of_range = cluster_.Cli({"queue", "update", "u", "--backoff", "7200"});
  EXPECT_EQ(out_of_range.exit_code, 5) << Describe(out_of_range);
}

TEST_F(CliSemantics, ShutdownRefusesPutsThenGetsDrainThenReportShutDown) {
  Ok({"put", "s", "a", "b"});
  // A get blocked on an empty queue is woken by the shutdown.
  std::unique_ptr<Process> blocked = cluster_.StartCli({"get", "empty", "--timeout", "60"});
  ASSERT_NE(blocked, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("empty", "waiting_consumers") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)));
  EXPECT_EQ(Ok({"queue", "shutdown", "empty"}), "0\n");
  std::optional<int> woken = blocked->Wait(absl::Seconds(20));
  ASSERT_TRUE(woken.has_value());
  EXPECT_EQ(*woken, 9) << blocked->Stderr();
  EXPECT_TRUE(absl::StrContains(blocked->Stderr(), "shut down")) << blocked->Stderr();

  EXPECT_EQ(Ok({"queue", "shutdown", "s"}), "0\n");
  CliResult put = cluster_.Cli({"put", "s", "c"});
  EXPECT_EQ(put.exit_code, 9) << Describe(put);
  EXPECT_TRUE(absl::StrContains(put.err, "shut down")) << put.err;
  CliResult submit = cluster_.Cli({"submit", "--queue", "s", "--handler", "square", "1"});
  EXPECT_EQ(submit.exit_code, 9) << Describe(submit);
  EXPECT_EQ(cluster_.Stats("s")["shut_down"], "true");

  EXPECT_EQ(Ok({"get", "s"}), "a\n");
  EXPECT_EQ(Ok({"get", "s"}), "b\n");
  CliResult drained = cluster_.Cli({"get", "s", "--timeout", "20"});
  EXPECT_EQ(drained.exit_code, 9) << Describe(drained);
  EXPECT_LT(drained.elapsed, absl::Seconds(10));  // at once, not after the timeout

  // --immediate drops what is left.
  Ok({"put", "s3", "a", "b", "c"});
  EXPECT_EQ(Ok({"queue", "shutdown", "s3", "--immediate"}), "3\n");
  CliResult gone = cluster_.Cli({"get", "s3", "--nowait"});
  EXPECT_EQ(gone.exit_code, 9) << Describe(gone);
  EXPECT_EQ(cluster_.StatNumber("s3", "total_cancelled"), 3);

  CliResult unknown = cluster_.Cli({"queue", "shutdown", "nope"});
  EXPECT_EQ(unknown.exit_code, 5) << Describe(unknown);
}

TEST_F(CliSemantics, StatsCountersAndPythonSizes) {
  Ok({"queue", "create", "st", "--maxsize", "3"});
  auto s = cluster_.Stats("st");
  EXPECT_EQ(s["qsize"], "0");
  EXPECT_EQ(s["empty"], "true");
  EXPECT_EQ(s["full"], "false");
  EXPECT_EQ(s["shut_down"], "false");
  EXPECT_EQ(s["dead_letter"], "st");

  Ok({"put", "st", "--delay", "300", "d"});
  Ok({"put", "st", "a"});
  s = cluster_.Stats("st");
  EXPECT_EQ(s["delayed"], "1");
  EXPECT_EQ(s["ready"], "1");
  EXPECT_EQ(s["qsize"], "2");
  EXPECT_EQ(s["empty"], "false");
  EXPECT_EQ(s["full"], "false");

  // A leased task left the queue (qsize) but still holds its room (full).
  Ok({"get", "st", "--lease"});
  Ok({"put", "st", "b"});
  s = cluster_.Stats("st");
  EXPECT_EQ(s["leased"], "1");
  EXPECT_EQ(s["qsize"], "2");
  EXPECT_EQ(s["full"], "true");
  CliResult full = cluster_.Cli({"put", "st", "c", "--nowait"});
  EXPECT_EQ(full.exit_code, 4) << Describe(full);

  CliResult list = cluster_.Cli({"queue", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  std::vector<std::string> rows = Lines(list.out);
  ASSERT_GE(rows.size(), 2u);
  std::vector<std::string> header = absl::StrSplit(rows[0], ' ', absl::SkipEmpty());
  EXPECT_EQ(header, (std::vector<std::string>{"NAME", "KIND", "READY", "LEASED", "UNFINISHED",
                                              "WORKERS", "DELAYED", "DEAD", "PENDING_RESULTS",
                                              "IDLE_TTL"}));
  std::vector<std::string> row = absl::StrSplit(rows[1], ' ', absl::SkipEmpty());
  ASSERT_EQ(row.size(), 10u) << rows[1];
  EXPECT_EQ(row[0], "st");
  EXPECT_EQ(row[6], "1");  // DELAYED
}

TEST(CliHelp, EveryVerbHasHelp) {
  Cluster cluster;  // not started: --help needs no master
  const std::vector<std::vector<std::string>> verbs = {
      {"queue", "create"}, {"queue", "list"},   {"queue", "stats"},   {"queue", "update"},
      {"queue", "shutdown"}, {"queue", "delete"}, {"queue", "purge"}, {"put"},
      {"get"},             {"submit"},          {"join"},             {"task-done"},
      {"status"},          {"cancel"},          {"complete"},         {"fail"},
      {"release"},         {"dlq", "list"},     {"dlq", "show"},      {"dlq", "requeue"},
      {"dlq", "purge"},    {"queue"},           {"dlq"}};
  for (std::vector<std::string> verb : verbs) {
    const std::string name = absl::StrJoin(verb, " ");
    verb.push_back("--help");
    CliResult r = cluster.CliRaw(verb);
    EXPECT_EQ(r.exit_code, 0) << name << "\n" << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.out, "Exit codes")) << name << "\n" << r.out;
  }
  CliResult no_sub = cluster.CliRaw({"dlq"});
  EXPECT_EQ(no_sub.exit_code, 2) << Describe(no_sub);
  CliResult both = cluster.CliRaw({"dlq", "requeue", "q", "5", "--all"});
  EXPECT_EQ(both.exit_code, 2) << Describe(both);
  CliResult neither = cluster.CliRaw({"dlq", "requeue", "q"});
  EXPECT_EQ(neither.exit_code, 2) << Describe(neither);
  CliResult lease_and_manual = cluster.CliRaw({"get", "q", "--lease", "--manual-task-done"});
  EXPECT_EQ(lease_and_manual.exit_code, 2) << Describe(lease_and_manual);
}

}  // namespace
}  // namespace taskq::testing
