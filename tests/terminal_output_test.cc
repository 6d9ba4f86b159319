// What the CLI prints on a terminal: text that came from other clients
// (payloads, results, errors, worker ids, history) must not be able to move
// the cursor or change the terminal (ESC sequences, CR, BEL, backspace, DEL,
// C1 controls); on a pipe it comes out byte for byte. The CLI runs under a
// real pseudo-terminal (Cluster::CliOnTerminal).
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// An OSC title change, a screen clear, a carriage return, a bell, DEL,
// backspace and the 8-bit CSI (U+009B as UTF-8).
const std::string kHostile = "a\x1b]0;owned\x07\x1b[2J\rb\x08\x7f\xc2\x9bz";

// The control bytes that must not reach a terminal raw.
void ExpectNoRawControls(const std::string& out) {
  for (char c : {'\x1b', '\r', '\x07', '\x08', '\x7f'}) {
    EXPECT_EQ(out.find(c), std::string::npos)
        << "raw control byte " << static_cast<int>(c) << " in terminal output: " << out;
  }
  EXPECT_FALSE(absl::StrContains(out, "\xc2\x9b")) << out;
}

class TerminalOutput : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
  }
  // Leases one task of `queue`; returns {id, lease}.
  std::pair<std::string, std::string> Lease(const std::string& queue) {
    CliResult got = cluster_.Cli({"get", queue, "--lease", "--nowait"});
    EXPECT_EQ(got.exit_code, 0) << Describe(got);
    std::vector<std::string> f = absl::StrSplit(got.out, absl::MaxSplits('\t', 2));
    if (f.size() < 3) {
      ADD_FAILURE() << Describe(got);
      return {"0", "0"};
    }
    return {f[0], f[1]};
  }
  Cluster cluster_;
};

TEST_F(TerminalOutput, GetEscapesControlCharactersOnATerminal) {
  CliResult put = cluster_.Cli({"put", "q", "--", kHostile, "caf\xc3\xa9 \xe2\x9c\x93"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult got = cluster_.CliOnTerminal({"get", "q", "--max", "2", "--nowait"});
  EXPECT_EQ(got.exit_code, 0) << got.out;
  ExpectNoRawControls(got.out);
  EXPECT_TRUE(absl::StrContains(got.out, "a\\x1b]0;owned\\x07\\x1b[2J\\x0db\\x08\\u007f\\u009bz"))
      << got.out;
  // Valid UTF-8 text stays as it is.
  EXPECT_TRUE(absl::StrContains(got.out, "caf\xc3\xa9 \xe2\x9c\x93\n")) << got.out;
}

TEST_F(TerminalOutput, PipedOutputKeepsTheExactBytes) {
  CliResult put = cluster_.Cli({"put", "q", "--", kHostile});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult got = cluster_.Cli({"get", "q", "--nowait"});
  EXPECT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, kHostile + "\n");
}

TEST_F(TerminalOutput, StatusDlqAndFailedResultsEscapeErrors) {
  CliResult put = cluster_.Cli({"put", "q", "--reply-to", "r", "--", kHostile});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  const std::string id = Lines(put.out).at(0);
  auto [leased_id, lease] = Lease("q");
  ASSERT_EQ(leased_id, id);
  CliResult fail = cluster_.Cli(
      {"fail", id, "--lease", lease, "--permanent", "--error", "boom" + kHostile});
  ASSERT_EQ(fail.exit_code, 0) << Describe(fail);

  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"status", id},
           {"status", id, "--json"},
           {"dlq", "list", "q"},
           {"dlq", "show", "q", id},
           {"dlq", "show", "q", id, "--json"},
           {"get", "r", "--nowait"},  // FAILED<TAB>error
       }) {
    CliResult r = cluster_.CliOnTerminal(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.out;
    ExpectNoRawControls(r.out);
    EXPECT_TRUE(absl::StrContains(r.out, "boom")) << args[0] << ": " << r.out;
  }
}

TEST_F(TerminalOutput, ErrorMessagesOnATerminalAreEscaped) {
  // Error messages go to stderr through the same escaping; the CLI's own
  // complaint about a bad header quotes it.
  CliResult r = cluster_.CliOnTerminal({"put", "q", "--header", "=\x1b[2J", "x"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  ExpectNoRawControls(r.out);
  EXPECT_TRUE(absl::StrContains(r.out, "\\x1b[2J")) << r.out;
}

}  // namespace
}  // namespace taskq::testing
