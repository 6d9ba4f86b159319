// `taskq top` (docs/CLI.md, top) driven the way a person uses it: in a
// terminal, here a detached tmux session of a fixed size on a tmux server
// of the test's own (its socket in the test's directory). The test reads
// the screen with capture-pane and types with send-keys: the queue's depth
// changes after a put, a sort key reorders the rows, `q` and Ctrl-C leave
// with the terminal as it was (same stty modes, main screen back), a
// lost master shows on the status line and the view recovers, a resize
// refits, a connected worker is listed. On a pipe, top prints plain blocks without escape codes.
#include <csignal>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

constexpr absl::Duration kDeadline = absl::Seconds(20);

// A tmux server with one detached session running a shell command.
class Tmux {
 public:
  Tmux(Cluster* cluster, const std::string& command, int columns, int rows)
      : cluster_(cluster) {
    started_ = Run({"new-session", "-d", "-x", absl::StrCat(columns), "-y", absl::StrCat(rows),
                    command});
  }
  ~Tmux() { Run({"kill-server"}); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  bool started() const { return started_; }
  // What the pane shows now, one string per row.
  std::vector<std::string> Screen() {
    std::string out;
    if (!Run({"capture-pane", "-p"}, &out)) return {};
    return absl::StrSplit(out, '\n');
  }
  std::string ScreenText() { return absl::StrJoin(Screen(), "\n"); }
  bool SendKeys(const std::string& keys) { return Run({"send-keys", keys}); }
  bool Resize(int columns, int rows) {
    return Run({"resize-window", "-x", absl::StrCat(columns), "-y", absl::StrCat(rows)});
  }

 private:
  // Runs `tmux -f /dev/null -S SOCKET args...`; true if it exited 0.
  bool Run(std::vector<std::string> args, std::string* out = nullptr) {
    std::vector<std::string> argv = {"tmux", "-f", "/dev/null", "-S", cluster_->dir() + "/tmux"};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions o;
    o.argv = std::move(argv);
    o.env = cluster_->ChildEnv();
    o.env["TMUX"] = "";  // not the session the test may run in
    o.env["TERM"] = "xterm";
    o.output_dir = cluster_->dir();
    o.name = absl::StrCat("tmux-", ++runs_);
    auto p = Process::Start(std::move(o));
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      return false;
    }
    const std::optional<int> status = (*p)->Wait(absl::Seconds(10));
    if (out != nullptr) *out = (*p)->Stdout();
    return status == 0;
  }

  Cluster* cluster_;
  int runs_ = 0;
  bool started_ = false;
};

// The row of `queue` on the screen: its cells split on blanks; empty if
// it is not shown.
std::vector<std::string> Row(const std::vector<std::string>& screen, const std::string& queue) {
  for (const std::string& line : screen) {
    std::vector<std::string> cells = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!cells.empty() && cells[0] == queue) return cells;
  }
  return {};
}

// Which screen row shows `queue` (-1: none).
int RowIndex(const std::vector<std::string>& screen, const std::string& queue) {
  for (size_t i = 0; i < screen.size(); ++i) {
    if (absl::StartsWith(screen[i], queue + " ")) return static_cast<int>(i);
  }
  return -1;
}

class CliTop : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(cluster_.Cli({"queue", "create", "alpha"}).exit_code, 0);
    ASSERT_EQ(cluster_.Cli({"queue", "create", "zeta"}).exit_code, 0);
  }

  // The shell line tmux runs: the terminal modes before and after top,
  // then top's exit status (last: the test waits for it), a marker, and a
  // process that keeps the pane.
  std::string TopCommand(const std::string& extra = "") {
    const std::string d = cluster_.dir();
    return absl::StrCat("stty -a > ", d, "/stty.before; ", BinPath("taskq"), " --master ",
                        cluster_.address(), " --token-file ", cluster_.token_file(),
                        " top --interval 0.2 ", extra, "; rc=$?; stty -a > ", d,
                        "/stty.after; echo $rc > ", d, "/top.rc; echo TOP-EXITED; exec cat");
  }

  // Waits for top's exit status; "" if it did not exit in time.
  std::string WaitForExit() {
    const std::string rc_file = cluster_.dir() + "/top.rc";
    WaitFor([&] { return absl::EndsWith(ReadFile(rc_file), "\n"); }, kDeadline,
            absl::Milliseconds(20));
    return std::string(absl::StripTrailingAsciiWhitespace(ReadFile(rc_file)));
  }

  void ExpectTerminalRestored(Tmux& tmux) {
    EXPECT_EQ(ReadFile(cluster_.dir() + "/stty.after"), ReadFile(cluster_.dir() + "/stty.before"));
    std::string screen;
    EXPECT_TRUE(WaitFor(
        [&] {
          screen = tmux.ScreenText();
          return absl::StrContains(screen, "TOP-EXITED");
        },
        kDeadline, absl::Milliseconds(50)))
        << screen;
    // The main screen is back: top drew on the alternate one.
    EXPECT_FALSE(absl::StrContains(screen, "taskq top")) << screen;
  }

  // Waits until `pred` holds for the screen; the last screen on failure.
  bool WaitForScreen(Tmux& tmux, const std::function<bool(const std::vector<std::string>&)>& pred,
                     std::string* last) {
    return WaitFor(
        [&] {
          std::vector<std::string> screen = tmux.Screen();
          *last = absl::StrJoin(screen, "\n");
          return pred(screen);
        },
        kDeadline, absl::Milliseconds(50));
  }

  // Waits until the screen shows `queue`'s row.
  bool WaitForRow(Tmux& tmux, const std::string& queue, std::string* last) {
    return WaitForScreen(
        tmux, [&](const std::vector<std::string>& s) { return !Row(s, queue).empty(); }, last);
  }

  Cluster cluster_;
};

TEST_F(CliTop, ShowsTheDepthChangeSortsByAKeyAndQuitsOnQ) {
  Tmux tmux(&cluster_, TopCommand(), 120, 40);
  ASSERT_TRUE(tmux.started());
  std::string screen;
  ASSERT_TRUE(WaitForScreen(
      tmux,
      [](const std::vector<std::string>& s) {
        const std::vector<std::string> row = Row(s, "zeta");
        return row.size() > 1 && row[1] == "0" && !Row(s, "alpha").empty();
      },
      &screen))
      << screen;
  EXPECT_TRUE(absl::StrContains(screen, "sort: QUEUE")) << screen;

  CliResult put = cluster_.Cli({"put", "zeta", "a", "b", "c"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  ASSERT_TRUE(WaitForScreen(
      tmux,
      [](const std::vector<std::string>& s) {
        const std::vector<std::string> row = Row(s, "zeta");
        return row.size() > 1 && row[1] == "3";
      },
      &screen))
      << screen;
  // By name, alpha comes first.
  std::vector<std::string> rows = tmux.Screen();
  EXPECT_LT(RowIndex(rows, "alpha"), RowIndex(rows, "zeta")) << screen;

  // `r` sorts by ready, the deepest first.
  ASSERT_TRUE(tmux.SendKeys("r"));
  ASSERT_TRUE(WaitForScreen(
      tmux,
      [](const std::vector<std::string>& s) {
        const int zeta = RowIndex(s, "zeta"), alpha = RowIndex(s, "alpha");
        return zeta >= 0 && alpha > zeta;
      },
      &screen))
      << screen;
  EXPECT_TRUE(absl::StrContains(screen, "sort: READY")) << screen;

  ASSERT_TRUE(tmux.SendKeys("q"));
  EXPECT_EQ(WaitForExit(), "0");
  ExpectTerminalRestored(tmux);
}

TEST_F(CliTop, ShowsTheConnectedWorkers) {
  Process* worker = cluster_.StartWorker({"--id", "wk-top", "--queue", "alpha", "--queue",
                                          "zeta", "--concurrency", "2"});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(cluster_.WaitWorkerConnected(worker));
  Tmux tmux(&cluster_, TopCommand(), 120, 40);
  ASSERT_TRUE(tmux.started());
  std::string screen;
  ASSERT_TRUE(WaitForRow(tmux, "wk-top", &screen)) << screen;
  EXPECT_TRUE(absl::StrContains(screen, "workers 1")) << screen;
  // WORKER HOST UP CREDITS RUNNING QUEUES.
  const std::vector<std::string> row = Row(tmux.Screen(), "wk-top");
  ASSERT_EQ(row.size(), 6u) << screen;
  EXPECT_EQ(row[4], "0") << screen;
  EXPECT_EQ(row[5], "alpha,zeta") << screen;
  // The queues it serves count it.
  EXPECT_EQ(Row(tmux.Screen(), "alpha")[5], "1") << screen;
  ASSERT_TRUE(tmux.SendKeys("q"));
  EXPECT_EQ(WaitForExit(), "0");
}

TEST_F(CliTop, CtrlCRestoresTheTerminal) {
  Tmux tmux(&cluster_, TopCommand(), 100, 30);
  ASSERT_TRUE(tmux.started());
  std::string screen;
  ASSERT_TRUE(WaitForRow(tmux, "alpha", &screen)) << screen;
  ASSERT_TRUE(tmux.SendKeys("C-c"));
  EXPECT_EQ(WaitForExit(), "130");
  ExpectTerminalRestored(tmux);
}

TEST_F(CliTop, AnUnreachableMasterShowsOnTheStatusLineAndTheViewRecovers) {
  Tmux tmux(&cluster_, TopCommand(), 120, 30);
  ASSERT_TRUE(tmux.started());
  std::string screen;
  ASSERT_TRUE(WaitForRow(tmux, "alpha", &screen)) << screen;
  bool shown = false;
  absl::Status restarted = cluster_.RestartMaster(SIGKILL, absl::Seconds(30), [&] {
    shown = WaitForScreen(
        tmux,
        [](const std::vector<std::string>& s) {
          // The last sample stays on the screen meanwhile.
          return !Row(s, "alpha").empty() &&
                 absl::StrContains(absl::StrJoin(s, "\n"), "cannot reach the master");
        },
        &screen);
  });
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_TRUE(shown) << screen;
  // The new master (memory store) has no queues until one is made.
  ASSERT_EQ(cluster_.Cli({"queue", "create", "reborn"}).exit_code, 0);
  EXPECT_TRUE(WaitForScreen(
      tmux,
      [](const std::vector<std::string>& s) {
        return !Row(s, "reborn").empty() &&
               !absl::StrContains(absl::StrJoin(s, "\n"), "cannot reach");
      },
      &screen))
      << screen;
  ASSERT_TRUE(tmux.SendKeys("q"));
  EXPECT_EQ(WaitForExit(), "0");
}

TEST_F(CliTop, FitsTheWindowWhenItIsResized) {
  const std::string long_name(70, 'x');
  ASSERT_EQ(cluster_.Cli({"queue", "create", long_name}).exit_code, 0);
  Tmux tmux(&cluster_, TopCommand(), 140, 30);
  ASSERT_TRUE(tmux.started());
  std::string screen;
  ASSERT_TRUE(WaitForRow(tmux, long_name, &screen)) << screen;
  ASSERT_TRUE(tmux.Resize(70, 12));
  // Every line within 70 columns: the long name is cut with '~'.
  EXPECT_TRUE(WaitForScreen(
      tmux,
      [](const std::vector<std::string>& s) {
        for (const std::string& line : s) {
          if (absl::StartsWith(line, "xxxx") && absl::StrContains(line, "x~ ")) return true;
        }
        return false;
      },
      &screen))
      << screen;
  for (const std::string& line : tmux.Screen()) EXPECT_LE(line.size(), 70u) << line;
  ASSERT_TRUE(tmux.SendKeys("q"));
  EXPECT_EQ(WaitForExit(), "0");
}

TEST_F(CliTop, PlainBlocksOnAPipe) {
  ASSERT_EQ(cluster_.Cli({"put", "alpha", "x", "y"}).exit_code, 0);
  CliResult r = cluster_.Cli({"top", "--iterations", "2", "--interval", "0.1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_EQ(Count(r.out, "taskq top  master"), 2u) << r.out;
  const std::vector<std::string> row = Row(Lines(r.out), "alpha");
  ASSERT_GT(row.size(), 1u) << r.out;
  EXPECT_EQ(row[1], "2") << r.out;
  // No key help on a pipe.
  EXPECT_FALSE(absl::StrContains(r.out, "q quit")) << r.out;
}

TEST_F(CliTop, PlainModeSaysWhenTheMasterCannotBeReached) {
  cluster_.master()->Stop();
  CliResult r = cluster_.Cli({"top", "--iterations", "2", "--interval", "0.1"});
  EXPECT_EQ(r.exit_code, 6) << Describe(r);
  EXPECT_EQ(r.out, "");
  // Each refresh says so; the last one does not promise a retry.
  EXPECT_EQ(Count(r.err, "cannot reach the master"), 2u) << r.err;
  EXPECT_EQ(Count(r.err, "; retrying"), 1u) << r.err;
}

TEST_F(CliTop, RefusesABadInterval) {
  for (const char* bad : {"0", "nan", "inf", "-1", "1x"}) {
    CliResult r = cluster_.Cli({"top", "--interval", bad, "--iterations", "1"});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "not a number of seconds from 0.1 to 3600")) << r.err;
  }
}

TEST_F(CliTop, AWrongTokenIsAnErrorNotARetryLoop) {
  const std::string wrong = cluster_.dir() + "/wrong-token";
  ASSERT_TRUE(WriteFile(wrong, "not-the-token\n").ok());
  CliResult r = cluster_.CliWithToken(wrong, {"top", "--iterations", "3"});
  EXPECT_EQ(r.exit_code, 5) << Describe(r);
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace taskq::testing
