// Unit tests of `taskq credential create --expires` parsing.
#include "client/credential_commands.h"

#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

TEST(ParseExpiresTest, AcceptsDaysHoursMinutesSecondsAndSums) {
  EXPECT_EQ(*ParseExpires("30d"), absl::Hours(24 * 30));
  EXPECT_EQ(*ParseExpires("12h"), absl::Hours(12));
  EXPECT_EQ(*ParseExpires("90m"), absl::Minutes(90));
  EXPECT_EQ(*ParseExpires("45s"), absl::Seconds(45));
  EXPECT_EQ(*ParseExpires("1d12h"), absl::Hours(36));
}

TEST(ParseExpiresTest, RefusesWhatIsNotADurationZeroAndTooLong) {
  for (const char* bad : {"", "30", "d", "1x", "1.5h", "-1h", "1h ", "10000000000s", "1d-"}) {
    auto parsed = ParseExpires(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << bad;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseExpires("0d").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseExpires("3651d").status()));
  EXPECT_TRUE(ParseExpires("3650d").ok());
}

}  // namespace
}  // namespace taskq::cli
