// Bounded queues and long polls through the CLI: put on a full queue and get
// on an empty one, with --nowait and with --timeout, and blocked calls that
// another client wakes up. The timing bounds check behaviour (it waited, it
// did not hang), not speed.
#include <string>

#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class FullEmpty : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    CliResult r = cluster_.Cli({"queue", "create", "small", "--maxsize", "2"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
  }
  void FillSmall() {
    CliResult a = cluster_.Cli({"put", "small", "one"});
    ASSERT_EQ(a.exit_code, 0) << Describe(a);
    CliResult b = cluster_.Cli({"put", "small", "two"});
    ASSERT_EQ(b.exit_code, 0) << Describe(b);
  }
  Cluster cluster_;
};

TEST_F(FullEmpty, PutNowaitOnFullQueueFailsAtOnce) {
  FillSmall();
  CliResult r = cluster_.Cli({"put", "small", "three", "--nowait"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(5)) << Describe(r);
  EXPECT_NE(r.err.find("full"), std::string::npos) << Describe(r);
  EXPECT_EQ(cluster_.StatNumber("small", "ready"), 2);
}

TEST_F(FullEmpty, PutWithTimeoutOnFullQueueWaitsThenFails) {
  FillSmall();
  CliResult r = cluster_.Cli({"put", "small", "three", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  EXPECT_GE(r.elapsed, absl::Milliseconds(250)) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(5)) << Describe(r);
  EXPECT_EQ(cluster_.StatNumber("small", "ready"), 2);
}

TEST_F(FullEmpty, TwoPayloadsOverTheLimitAreRefusedTogether) {
  CliResult a = cluster_.Cli({"put", "small", "one"});
  ASSERT_EQ(a.exit_code, 0) << Describe(a);
  // One put of two tasks is all-or-none: neither fits.
  CliResult r = cluster_.Cli({"put", "small", "two", "three", "--nowait"});
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  EXPECT_EQ(cluster_.StatNumber("small", "ready"), 1);
}

TEST_F(FullEmpty, GetNowaitOnEmptyQueueFailsAtOnce) {
  CliResult r = cluster_.Cli({"get", "small", "--nowait"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(5)) << Describe(r);
  EXPECT_EQ(r.out, "") << Describe(r);
}

TEST_F(FullEmpty, GetWithTimeoutOnEmptyQueueWaitsThenFails) {
  CliResult r = cluster_.Cli({"get", "small", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_GE(r.elapsed, absl::Milliseconds(250)) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(5)) << Describe(r);
}

TEST_F(FullEmpty, BlockedGetIsWokenByPut) {
  std::unique_ptr<Process> getter = cluster_.StartCli({"get", "small", "--timeout", "20"});
  ASSERT_NE(getter, nullptr);
  const absl::Time start = absl::Now();
  // Put only once the get is really waiting on the master.
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("small", "waiting_consumers") == 1; },
                      absl::Seconds(15), absl::Milliseconds(20)))
      << getter->Stderr();
  CliResult put = cluster_.Cli({"put", "small", "wake-up"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);

  std::optional<int> status = getter->Wait(absl::Seconds(15));
  ASSERT_TRUE(status.has_value()) << "blocked get was not woken by the put";
  EXPECT_EQ(*status, 0) << getter->Stderr();
  EXPECT_EQ(getter->Stdout(), "wake-up\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(18));
  EXPECT_EQ(cluster_.StatNumber("small", "waiting_consumers"), 0);
}

TEST_F(FullEmpty, BlockedPutIsWokenByGet) {
  FillSmall();
  std::unique_ptr<Process> putter = cluster_.StartCli({"put", "small", "three", "--timeout", "20"});
  ASSERT_NE(putter, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("small", "waiting_producers") == 1; },
                      absl::Seconds(15), absl::Milliseconds(20)))
      << putter->Stderr();
  CliResult get = cluster_.Cli({"get", "small", "--nowait"});
  ASSERT_EQ(get.exit_code, 0) << Describe(get);
  EXPECT_EQ(get.out, "one\n");

  std::optional<int> status = putter->Wait(absl::Seconds(15));
  ASSERT_TRUE(status.has_value()) << "blocked put was not woken by the get";
  EXPECT_EQ(*status, 0) << putter->Stderr();
  EXPECT_EQ(Lines(putter->Stdout()).size(), 1u) << "prints the new task id";
  for (const std::string want : {"two", "three"}) {
    CliResult g = cluster_.Cli({"get", "small", "--nowait"});
    EXPECT_EQ(g.exit_code, 0) << Describe(g);
    EXPECT_EQ(g.out, want + "\n");
  }
}

}  // namespace
}  // namespace taskq::testing
