// Unit tests of the put/submit scheduling flags: time parsing (RFC 3339 and
// Unix seconds), dedup-key expansion, and how --delay / --not-before /
// --dedup-key land on the tasks.
#include "client/schedule_flags.h"

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/limits.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

ScheduleFlags Flags(double delay_seconds, std::string not_before = "",
                    std::string dedup_key = "") {
  ScheduleFlags f;
  f.delay_seconds = delay_seconds;
  f.not_before = std::move(not_before);
  f.dedup_key = std::move(dedup_key);
  return f;
}

std::vector<v1::TaskSpec> Tasks(const std::vector<std::string>& payloads) {
  std::vector<v1::TaskSpec> tasks;
  for (const std::string& p : payloads) {
    v1::TaskSpec t;
    t.set_payload(p);
    tasks.push_back(t);
  }
  return tasks;
}

TEST(ParseTimeArg, AcceptsRfc3339AndUnixSeconds) {
  auto t = ParseTimeArg("2025-01-31T08:00:00Z");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(absl::ToUnixSeconds(*t), 1738310400);
  auto offset = ParseTimeArg("2025-01-31T09:00:00.5+01:00");
  ASSERT_TRUE(offset.ok()) << offset.status();
  EXPECT_EQ(absl::ToUnixMillis(*offset), 1738310400500);
  auto unix_seconds = ParseTimeArg("1738310400");
  ASSERT_TRUE(unix_seconds.ok());
  EXPECT_EQ(*unix_seconds, absl::FromUnixSeconds(1738310400));
  auto fraction = ParseTimeArg("1738310400.25");
  ASSERT_TRUE(fraction.ok());
  EXPECT_EQ(absl::ToUnixMillis(*fraction), 1738310400250);
}

TEST(ParseTimeArg, RefusesOtherText) {
  for (const char* bad : {"", "tomorrow", "2025-01-31", "2025-01-31 08:00:00", "1e300", "nan"}) {
    auto t = ParseTimeArg(bad);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ExpandDedupKey, ReplacesEveryBracePair) {
  EXPECT_EQ(*ExpandDedupKey("job-{}", "7"), "job-7");
  EXPECT_EQ(*ExpandDedupKey("{}:{}", "x"), "x:x");
  EXPECT_EQ(*ExpandDedupKey("fixed", "x"), "fixed");
  EXPECT_FALSE(ExpandDedupKey("{}", "").ok());  // empty key
  EXPECT_TRUE(ExpandDedupKey("k{}", std::string(kMaxDedupKeyBytes - 1, 'a')).ok());
  auto too_long = ExpandDedupKey("k{}", std::string(kMaxDedupKeyBytes, 'a'));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("at most 128"), absl::string_view::npos);
}

TEST(ApplyScheduleFlags, NothingGivenChangesNothing) {
  auto tasks = Tasks({"a", "b"});
  ASSERT_TRUE(ApplyScheduleFlags(ScheduleFlags{}, absl::Now(), &tasks).ok());
  for (const auto& t : tasks) {
    EXPECT_EQ(t.delay_ms(), 0u);
    EXPECT_EQ(t.not_before_unix_ms(), 0);
    EXPECT_EQ(t.dedup_key(), "");
  }
}

TEST(ApplyScheduleFlags, DelayAndNotBefore) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  auto tasks = Tasks({"a"});
  ASSERT_TRUE(ApplyScheduleFlags(Flags(1.5), now, &tasks).ok());
  EXPECT_EQ(tasks[0].delay_ms(), 1500u);
  EXPECT_EQ(tasks[0].not_before_unix_ms(), 0);

  tasks = Tasks({"a"});
  ASSERT_TRUE(ApplyScheduleFlags(Flags(-1, "1700000100.0001"), now, &tasks).ok());
  EXPECT_EQ(tasks[0].delay_ms(), 0u);
  EXPECT_EQ(tasks[0].not_before_unix_ms(), 1'700'000'100'001);  // rounded up, never early

  // Both: both go to the master, which takes the later.
  tasks = Tasks({"a"});
  ASSERT_TRUE(ApplyScheduleFlags(Flags(2, "2023-11-14T22:15:00Z"), now,
                                 &tasks)
                  .ok());
  EXPECT_EQ(tasks[0].delay_ms(), 2000u);
  EXPECT_EQ(tasks[0].not_before_unix_ms(), 1'700'000'100'000);
}

TEST(ApplyScheduleFlags, LongDelayBecomesNotBefore) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  auto tasks = Tasks({"a"});
  const double sixty_days = 60.0 * 86400;  // beyond uint32 milliseconds
  ASSERT_TRUE(ApplyScheduleFlags(Flags(sixty_days), now, &tasks).ok());
  EXPECT_EQ(tasks[0].delay_ms(), 0u);
  EXPECT_EQ(tasks[0].not_before_unix_ms(), (1'700'000'000 + 60 * 86400) * int64_t{1000});
}

TEST(ApplyScheduleFlags, RefusesTooFarAndBadTimes) {
  const absl::Time now = absl::Now();
  auto tasks = Tasks({"a"});
  auto s = ApplyScheduleFlags(Flags(366.0 * 86400), now, &tasks);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--delay"), absl::string_view::npos) << s;
  s = ApplyScheduleFlags(Flags(-1, "2999-01-01T00:00:00Z"), now, &tasks);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--not-before"), absl::string_view::npos) << s;
  s = ApplyScheduleFlags(Flags(-1, "soon"), now, &tasks);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(ApplyScheduleFlags, DedupKeyPerPayload) {
  auto one = Tasks({"x"});
  ASSERT_TRUE(ApplyScheduleFlags(Flags(-1, "", "only"), absl::Now(), &one).ok());
  EXPECT_EQ(one[0].dedup_key(), "only");

  auto many = Tasks({"1", "2", "1"});
  ASSERT_TRUE(ApplyScheduleFlags(Flags(-1, "", "sq-{}"), absl::Now(), &many).ok());
  EXPECT_EQ(DedupKeys(many), (std::vector<std::string>{"sq-1", "sq-2", "sq-1"}));

  // Several payloads under one fixed key would all collapse onto the first.
  auto refused = Tasks({"1", "2"});
  auto s = ApplyScheduleFlags(Flags(-1, "", "same"), absl::Now(), &refused);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("{}"), absl::string_view::npos) << s;

  auto too_long = Tasks({"ok", std::string(200, 'x')});
  s = ApplyScheduleFlags(Flags(-1, "", "{}"), absl::Now(), &too_long);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("payload #2"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace taskq::cli
