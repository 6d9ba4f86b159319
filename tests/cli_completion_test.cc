// `taskq completion bash`: the script loads in a real bash, registers
// itself for taskq, and its completion function completes verbs, sub-verbs,
// per-verb flags, flag choices and queue names asked of a running master,
// and stays quiet (and quick) when the master cannot be reached.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class CliCompletion : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
  }

  // Runs bash with the script loaded; `body` runs after it with $T = the
  // taskq binary. Returns stdout; fails the test on a non-zero exit.
  std::string Bash(const std::string& body) {
    const std::string script = absl::StrCat(
        "T=\"$1\"\n"
        "source <(\"$T\" completion bash) || exit 90\n"
        // Completes LINE (the cursor at its end) as bash would, prints the
        // candidates on one line.
        "c() {\n"
        "  COMP_LINE=\"$1\"; COMP_POINT=${#1}\n"
        "  read -r -a COMP_WORDS <<<\"$1\"\n"
        "  [[ \"$1\" == *' ' ]] && COMP_WORDS+=('')\n"
        "  COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n"
        "  _taskq; echo \"${COMPREPLY[*]}\"\n"
        "}\n",
        body, "\n");
    auto p = cluster_.Spawn("bash", {"/bin/bash", "-c", script, "bash", BinPath("taskq")});
    if (p == nullptr) {
      ADD_FAILURE() << "cannot run bash";
      return "";
    }
    EXPECT_EQ(p->Wait(absl::Seconds(60)), 0) << p->Stderr();
    return p->Stdout();
  }

  std::string Complete(const std::string& line) {
    std::string out = Bash(absl::StrCat("c '", line, "'"));
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // The connection flags of this test's master, as a user would type them.
  std::string Connect() const {
    return absl::StrCat("$T --master ", cluster_.address(), " --token-file ",
                        cluster_.token_file());
  }

  Cluster cluster_;
};

TEST_F(CliCompletion, LoadsAndRegistersForTaskq) {
  EXPECT_EQ(Bash("complete -p taskq"), "complete -F _taskq taskq\n");
}

TEST_F(CliCompletion, VerbsSubVerbsAndFlags) {
  EXPECT_EQ(Complete("taskq qu"), "queue");
  EXPECT_EQ(Complete("taskq queue st"), "stats");
  EXPECT_EQ(Complete("taskq dlq "), "list show requeue purge");
  EXPECT_EQ(Complete("taskq queue list --j"), "--json --join");
  // Global flags after the verb too; --lease is a flag of get (no value).
  EXPECT_EQ(Complete("taskq get --lease --no"), "--nowait");
  EXPECT_EQ(Complete("taskq --master h:1 status 7 --js"), "--json");
  EXPECT_EQ(Complete("taskq queue create jobs --kind "), "fifo lifo priority");
  EXPECT_EQ(Complete("taskq credential create n --role w"), "worker");
  EXPECT_EQ(Complete("taskq completion "), "bash");
}

TEST_F(CliCompletion, QueueNamesComeFromTheMaster) {
  for (const char* q : {"alpha", "beta"}) {
    CliResult r = cluster_.Cli({"queue", "create", q});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
  }
  const std::string connect = Connect();
  // The line's --master and --token-file are passed on to `queue list`.
  EXPECT_EQ(Bash(absl::StrCat("c \"", connect, " get \"")), "alpha beta\n");
  EXPECT_EQ(Bash(absl::StrCat("c \"", connect, " submit --queue al\"")), "alpha\n");
  EXPECT_EQ(Bash(absl::StrCat("c \"", connect, " queue stats b\"")), "beta\n");
  // `queue create NAME` names a new queue: nothing to offer.
  EXPECT_EQ(Bash(absl::StrCat("c \"", connect, " queue create \"")), "\n");
}

TEST_F(CliCompletion, UnreachableMasterOffersNothingQuickly) {
  const absl::Time start = absl::Now();
  EXPECT_EQ(Bash("c \"$T --master 127.0.0.1:1 get \""), "\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

}  // namespace
}  // namespace taskq::testing
