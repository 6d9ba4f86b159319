// Scenario 3 of the multi-host cluster: the client host's link drops (its
// interface goes down: its own sends fail at once) or turns into a black
// hole (packets held, no error anywhere) for 5 s, 15 s or 30 s while
// `taskq submit --wait` runs. Workers keep completing tasks meanwhile, so
// results pile up for the client; after 30 s all of them are done.
// What a user must see: every result printed exactly once, exit 0.
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

constexpr int kTasks = 200;
// Results printed before the cut starts.
constexpr size_t kBeforeCut = 20;

enum class Cut { kLinkDown, kBlackHole };

struct Case {
  Cut cut;
  int seconds;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(info.param.cut == Cut::kLinkDown ? "LinkDown" : "BlackHole",
                      info.param.seconds, "s");
}

// For gtest's messages ("GetParam() = LinkDown5s").
void PrintTo(const Case& c, std::ostream* os) { *os << CaseName({c, 0}); }

// 0.2 s a task, 6 at a time: about 7 s of work for 200 tasks.
class ClientCut
    : public ClusterFixture<::testing::TestWithParam<Case>, ClusterStart::kSlowWorkers> {};

TEST_P(ClientCut, SubmitWaitPrintsEveryResultOnceAndExitsZero) {
  const Case c = GetParam();
  std::set<std::string> expected;
  std::unique_ptr<Process> submit = StartSlowSubmit(kTasks, kBeforeCut, &expected);
  ASSERT_NE(submit, nullptr);
  auto printed = [&] { return Lines(submit->Stdout()).size(); };

  absl::Status s = c.cut == Cut::kLinkDown ? cluster_.net().LinkDown("client")
                                           : cluster_.net().BlackHole("client");
  ASSERT_TRUE(s.ok()) << s;
  const size_t at_cut = printed();
  // The cut lasts its time, measured by a deadline (nothing to wait for).
  const absl::Time heal_at = absl::Now() + absl::Seconds(c.seconds);
  WaitFor([&] { return !submit->Running(); }, heal_at - absl::Now(), absl::Milliseconds(50));
  EXPECT_TRUE(submit->Running()) << "submit --wait gave up during the cut: " << submit->Stderr();
  // Counted before healing: Heal returns once the link is up again, and
  // results already flow by then.
  const size_t at_heal = printed();
  const absl::Time healed = absl::Now();
  s = cluster_.net().Heal("client");
  ASSERT_TRUE(s.ok()) << s;

  // Recovery: the next result printed after the link came back.
  bool resumed = WaitFor([&] { return printed() > at_heal || !submit->Running(); },
                         absl::Seconds(90), absl::Milliseconds(10));
  const absl::Duration recovery = absl::Now() - healed;
  std::optional<int> rc = submit->Wait(absl::Seconds(120));
  if (!rc.has_value()) {
    submit->Kill(SIGKILL);
    submit->Wait(absl::Seconds(10));
  }
  ASSERT_TRUE(rc.has_value()) << "submit --wait still running 2 min after the cut ended";
  EXPECT_EQ(*rc, 0) << submit->Stderr();
  EXPECT_EQ(CheckEachOnce(Lines(submit->Stdout()), expected), "") << submit->Stderr();
  std::cout << "[measure] client " << CaseName({c, 0}) << ": " << at_cut << " results before, "
            << at_heal - at_cut << " during, next result "
            << (resumed ? absl::FormatDuration(recovery) : "never") << " after the link came back"
            << "; exit " << *rc << "\n";
}

INSTANTIATE_TEST_SUITE_P(Cuts, ClientCut,
                         ::testing::Values(Case{Cut::kLinkDown, 5}, Case{Cut::kLinkDown, 15},
                                           Case{Cut::kLinkDown, 30}, Case{Cut::kBlackHole, 5},
                                           Case{Cut::kBlackHole, 15}, Case{Cut::kBlackHole, 30}),
                         CaseName);

}  // namespace
}  // namespace taskq::testing
