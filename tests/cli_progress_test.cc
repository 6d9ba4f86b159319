// Progress of `taskq submit --wait`, `taskq results` and `taskq join`
// (docs/CLI.md, submit, results, join): a line with
// counts, rate and ETA redrawn on stderr only when stderr is a terminal,
// and never with --json or --quiet; the result lines on stdout are the same
// either way. Runs the CLI on pipes, on a pseudo-terminal, and with only
// stderr on a pseudo-terminal (stdout a file).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

const std::vector<std::string> kSleepResults = {"slept 0.2", "slept 0.2", "slept 0.2"};

class CliProgress : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
    Process* worker = cluster_.StartWorker({"--queue", "tasks", "--concurrency", "1"});
    ASSERT_NE(worker, nullptr);
    ASSERT_TRUE(cluster_.WaitWorkerConnected(worker));
  }

  std::vector<std::string> Submit(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "sleep",
                                     "--wait"};
    args.insert(args.end(), extra.begin(), extra.end());
    for (int i = 0; i < 3; ++i) args.push_back("0.2");
    return args;
  }

  // Runs the CLI with stderr on a pseudo-terminal and stdout into a file;
  // returns {exit code, what the terminal got, stdout}.
  struct Split {
    int exit_code = -1;
    std::string terminal;
    std::string out;
  };
  Split RunWithStderrOnTerminal(const std::vector<std::string>& args) {
    Split r;
    int master_fd = -1, slave_fd = -1;
    if (!OpenRawPty(&master_fd, &slave_fd)) return r;
    const std::string out_path = cluster_.dir() + "/split.out";
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$@\" > \"$OUT\"", "sh",
                                     BinPath("taskq"), "--master", cluster_.address(),
                                     "--token-file", cluster_.token_file()};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions o;
    o.argv = std::move(argv);
    o.env = cluster_.ChildEnv();
    o.env["OUT"] = out_path;
    o.output_dir = cluster_.dir();
    o.name = "split";
    o.terminal = ::ttyname(slave_fd);
    auto p = Process::Start(std::move(o));
    auto drain = [&] {
      char buf[4096];
      for (ssize_t n; (n = ::read(master_fd, buf, sizeof buf)) > 0;) r.terminal.append(buf, n);
    };
    if (p.ok()) {
      const bool done = WaitFor(
          [&] {
            drain();
            return !(*p)->Running();
          },
          absl::Seconds(60), absl::Milliseconds(2));
      if (!done) {
        (*p)->Kill(SIGKILL);
        (*p)->Wait(absl::Seconds(10));
        ADD_FAILURE() << "taskq still running after 60 s; killed";
      }
      r.exit_code = (*p)->exit_status().value_or(-1);
      drain();
    } else {
      ADD_FAILURE() << p.status();
    }
    ::close(slave_fd);
    ::close(master_fd);
    r.out = ReadFile(out_path);
    return r;
  }

  Cluster cluster_;
};

TEST_F(CliProgress, NothingExtraWithoutATerminal) {
  CliResult r = cluster_.Cli(Submit());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(Sorted(Lines(r.out)), kSleepResults);
}

TEST_F(CliProgress, RedrawnOnATerminal) {
  CliResult r = cluster_.CliOnTerminal(Submit());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // Drawn from the start, redrawn in place, and left at its final state.
  EXPECT_TRUE(absl::StrContains(r.out, "\r[....................] 0/3 done, 0 failed")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\r[####################] 3/3 done, 0 failed")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\x1b[K")) << r.out;
  // Each result line is printed with the progress line erased first, so it
  // starts at the left edge as a whole line.
  EXPECT_EQ(Count(r.out, "\r\x1b[Kslept 0.2\n"), 3u) << r.out;
}

TEST_F(CliProgress, StdoutToAFileStderrOnATerminal) {
  Split r = RunWithStderrOnTerminal(Submit({"--show-ids"}));
  ASSERT_EQ(r.exit_code, 0) << r.terminal;
  EXPECT_TRUE(absl::StrContains(r.terminal, "3/3 done, 0 failed")) << r.terminal;
  // The file holds the result lines and nothing else.
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (const std::string& line : lines) {
    EXPECT_TRUE(absl::EndsWith(line, "\tslept 0.2")) << line;
    EXPECT_EQ(line.find_first_of("\r\x1b"), std::string::npos) << line;
  }
}

TEST_F(CliProgress, PayloadsDeduplicatedInOneSubmissionEndComplete) {
  // Three payloads, two equal under the dedup key: two tasks, two results.
  CliResult r = cluster_.CliOnTerminal({"submit", "--queue", "tasks", "--handler", "sleep",
                                        "--wait", "--dedup-key", "k{}", "0.1", "0.2", "0.1"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "2/2 done, 0 failed")) << r.out;
}

TEST_F(CliProgress, NotWithJsonOrQuiet) {
  for (const char* flag : {"--json", "--quiet"}) {
    CliResult r = cluster_.CliOnTerminal(Submit({flag}));
    ASSERT_EQ(r.exit_code, 0) << flag << ": " << r.out;
    EXPECT_FALSE(absl::StrContains(r.out, "done,")) << flag << ": " << r.out;
    EXPECT_FALSE(absl::StrContains(r.out, "\x1b[K")) << flag << ": " << r.out;
    EXPECT_EQ(Count(r.out, "slept 0.2"), 3u) << flag << ": " << r.out;
  }
}

// `taskq results` counts the results read against those the job's reply
// queue holds or still owes.
TEST_F(CliProgress, ResultsOnATerminal) {
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to",
                                "job", "0.2", "0.2", "0.2"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult r = cluster_.CliOnTerminal({"results", "job"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "/3 done, 0 failed")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\r[####################] 3/3 done, 0 failed")) << r.out;
  EXPECT_EQ(Count(r.out, "\r\x1b[Kslept 0.2\n"), 3u) << r.out;
}

TEST_F(CliProgress, ResultsWithoutATerminalOrWithQuiet) {
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to",
                                "job1", "0.1", "0.1"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult r = cluster_.Cli({"results", "job1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(Lines(r.out), (std::vector<std::string>{"slept 0.1", "slept 0.1"}));

  put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to", "job2",
                      "0.1"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  r = cluster_.CliOnTerminal({"results", "job2", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "done,")) << r.out;
  EXPECT_EQ(r.out, "slept 0.1\n");
}

// `taskq join` samples the queue's counters while it waits: the tasks
// unfinished when it started (and any put since) are the total.
TEST_F(CliProgress, JoinOnATerminal) {
  // The first task takes long enough that join starts before any is done.
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "1", "0.1",
                                "0.1"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult r = cluster_.CliOnTerminal({"join", "tasks"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\r[....................] 0/3 done, 0 failed")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\r[####################] 3/3 done, 0 failed")) << r.out;
  EXPECT_TRUE(absl::EndsWith(r.out, "\n")) << r.out;
}

TEST_F(CliProgress, JoinWithoutATerminalOrWithQuiet) {
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "0.2"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult r = cluster_.Cli({"join", "tasks"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
  put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "sleep", "0.2"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  r = cluster_.CliOnTerminal({"join", "tasks", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace taskq::testing
