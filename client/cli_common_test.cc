// Unit tests of the CLI's pure helpers: exit-code mapping, --header
// parsing, and seconds-to-duration conversion.
#include "client/cli_common.h"

#include "client/exit_codes.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

TEST(ExitCodeFor, MapsStatusAndCallKindToTheDocumentedCodes) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus(), CallKind::kGet), 0);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("empty"), CallKind::kGet), 3);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("join"), CallKind::kWait), 8);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("wait"), CallKind::kSubmit), 8);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("slow"), CallKind::kAdmin), 1);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("full"), CallKind::kPut), 4);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("full"), CallKind::kSubmit), 4);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("big"), CallKind::kGet), 1);
  for (const absl::Status& refused :
       {absl::UnauthenticatedError(""), absl::PermissionDeniedError(""),
        absl::InvalidArgumentError(""), absl::NotFoundError(""), absl::AlreadyExistsError(""),
        absl::FailedPreconditionError("")}) {
    EXPECT_EQ(ExitCodeFor(refused, CallKind::kAdmin), 5) << refused;
    EXPECT_EQ(ExitCodeFor(refused, CallKind::kGet), 5) << refused;
  }
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("down"), CallKind::kPut), 6);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("oops"), CallKind::kPut), 1);
  EXPECT_EQ(ExitCodeFor(absl::CancelledError("bye"), CallKind::kGet), 1);
}

TEST(ExitCodeFor, QueueShutDown) {
  // A put on a shut-down queue is FAILED_PRECONDITION; a get on a drained
  // one OUT_OF_RANGE. Elsewhere these codes keep their general meaning.
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("shut down"), CallKind::kPut), 9);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("shut down"), CallKind::kSubmit), 9);
  EXPECT_EQ(ExitCodeFor(absl::OutOfRangeError("drained"), CallKind::kGet), 9);
  EXPECT_EQ(ExitCodeFor(absl::OutOfRangeError("drained"), CallKind::kSubmit), 9);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("lease lost"), CallKind::kAdmin), 5);
  EXPECT_EQ(ExitCodeFor(absl::OutOfRangeError("?"), CallKind::kAdmin), 1);
}

TEST(ErrorMessage, AnUnknownOutcomeOfAPutIsSaidAndNotCalledUnreachable) {
  // The master's own word: a commit failed, the change is kept and retried.
  const absl::Status kept = absl::UnavailableError(
      "outcome unknown: the change was made but storing it failed (disk full); ... use a dedup "
      "key");
  EXPECT_EQ(ErrorMessage(kept, CallKind::kPut, "m:1"), kept.message());
  // Cut off after it may have reached the master: the put may be stored.
  const std::string cut =
      ErrorMessage(absl::UnavailableError("Socket closed"), CallKind::kPut, "m:1");
  EXPECT_NE(cut.find("cannot reach the master at m:1: Socket closed"), std::string::npos) << cut;
  EXPECT_NE(cut.find("outcome unknown"), std::string::npos) << cut;
  EXPECT_NE(cut.find("--dedup-key"), std::string::npos) << cut;
  const std::string submit = ErrorMessage(
      absl::UnavailableError("putting tasks on jobs: Socket closed"), CallKind::kSubmit, "m:1");
  EXPECT_NE(submit.find("outcome unknown"), std::string::npos) << submit;
  // Never sent, or not a put: nothing is unknown.
  const std::string down = ErrorMessage(
      absl::UnavailableError("failed to connect to all addresses"), CallKind::kPut, "m:1");
  EXPECT_EQ(down.find("outcome unknown"), std::string::npos) << down;
  const std::string stats =
      ErrorMessage(absl::UnavailableError("Socket closed"), CallKind::kAdmin, "m:1");
  EXPECT_EQ(stats.find("outcome unknown"), std::string::npos) << stats;
  // The master refused before changing anything: known, and it was reached.
  const std::string refused = ErrorMessage(
      absl::UnavailableError("store I/O error: commit failed ..."), CallKind::kPut, "m:1");
  EXPECT_EQ(refused, "store I/O error: commit failed ...");
}

TEST(ParseHeaders, SplitsAtTheFirstEquals) {
  auto h = ParseHeaders({"a=1", "b=x=y", "c="});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, (std::map<std::string, std::string>{{"a", "1"}, {"b", "x=y"}, {"c", ""}}));
}

TEST(ParseHeaders, RefusesMissingKeyOrEquals) {
  EXPECT_FALSE(ParseHeaders({"novalue"}).ok());
  EXPECT_FALSE(ParseHeaders({"=v"}).ok());
}

TEST(SecondsToDuration, FractionsAndForever) {
  EXPECT_EQ(SecondsToDuration(0.25), absl::Milliseconds(250));
  EXPECT_EQ(SecondsToDuration(0), absl::ZeroDuration());
  EXPECT_EQ(SecondsToDuration(1e12), absl::InfiniteDuration());
  EXPECT_EQ(WaitFlags{}.timeout(), absl::InfiniteDuration());
  EXPECT_EQ((WaitFlags{.timeout_seconds = 2}).timeout(), absl::Seconds(2));
}

TEST(KindName, NamesEveryKind) {
  EXPECT_EQ(KindName(v1::QUEUE_KIND_UNSPECIFIED), "fifo");
  EXPECT_EQ(KindName(v1::QUEUE_KIND_FIFO), "fifo");
  EXPECT_EQ(KindName(v1::QUEUE_KIND_LIFO), "lifo");
  EXPECT_EQ(KindName(v1::QUEUE_KIND_PRIORITY), "priority");
}

}  // namespace
}  // namespace taskq::cli
