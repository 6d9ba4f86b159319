// Unit tests of the queue settings flags: seconds to milliseconds, and
// `queue update` sending only the flags given.
#include "client/queue_settings.h"

#include <string>
#include <vector>

#include "client/cli_common.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

// Parses `args` (after the program name) into fresh flags.
struct Parsed {
  CLI::App app{"test"};
  QueueSettingsFlags flags;
  explicit Parsed(std::vector<std::string> args) {
    AddQueueSettingsFlags(&app, &flags, /*for_update=*/true);
    std::reverse(args.begin(), args.end());  // CLI11 takes them reversed
    app.parse(args);
  }
};

TEST(SecondsToMs, RoundsUpAndChecksRange) {
  EXPECT_EQ(*SecondsToMs(1, "--lease"), 1000u);
  EXPECT_EQ(*SecondsToMs(0.0001, "--backoff"), 1u);
  EXPECT_EQ(*SecondsToMs(0, "--delay"), 0u);
  auto big = SecondsToMs(5e6, "--lease");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("--lease"), absl::string_view::npos);
}

TEST(QueueSettings, UpdateCarriesOnlyTheGivenFlags) {
  Parsed p({"--max-attempts", "1", "--backoff", "0.001"});
  auto update = ToUpdate(p.flags);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_TRUE(update->has_max_attempts());
  EXPECT_EQ(update->max_attempts(), 1u);
  EXPECT_TRUE(update->has_backoff_ms());
  EXPECT_EQ(update->backoff_ms(), 1u);
  EXPECT_FALSE(update->has_maxsize());
  EXPECT_FALSE(update->has_lease_ms());
  EXPECT_FALSE(update->has_backoff_max_ms());
  EXPECT_FALSE(update->has_dead_letter());
}

TEST(QueueSettings, ZeroAndEmptyAreValuesToo) {
  // --maxsize 0 = unbounded again; --dead-letter '' = the queue's own.
  Parsed p({"--maxsize", "0", "--dead-letter", ""});
  auto update = ToUpdate(p.flags);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_TRUE(update->has_maxsize());
  EXPECT_EQ(update->maxsize(), 0u);
  EXPECT_TRUE(update->has_dead_letter());
  EXPECT_EQ(update->dead_letter(), "");
}

TEST(QueueSettings, UpdateWithNothingIsRefused) {
  Parsed p({});
  EXPECT_EQ(ToUpdate(p.flags).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QueueSettings, CreateFillsTheConfig) {
  Parsed p({"--lease", "1.5", "--max-attempts", "4", "--backoff", "2", "--backoff-max", "30",
            "--dead-letter", "q.dlq", "--maxsize", "10"});
  v1::QueueConfig config;
  ASSERT_TRUE(FillConfig(p.flags, &config).ok());
  EXPECT_EQ(config.lease_ms(), 1500u);
  EXPECT_EQ(config.max_attempts(), 4u);
  EXPECT_EQ(config.backoff_ms(), 2000u);
  EXPECT_EQ(config.backoff_max_ms(), 30000u);
  EXPECT_EQ(config.dead_letter(), "q.dlq");
  EXPECT_EQ(config.maxsize(), 10u);
}

TEST(QueueSettings, FlagChecks) {
  CLI::App app{"test"};
  QueueSettingsFlags flags;
  AddQueueSettingsFlags(&app, &flags, false);
  std::vector<std::string> zero_lease = {"0", "--lease"};
  EXPECT_THROW(app.parse(zero_lease), CLI::ValidationError);
}

TEST(QueueSettings, IdleTtlInSecondsUpToAYearAndZeroMeansNever) {
  Parsed day({"--idle-ttl", "86400"});
  v1::QueueConfig config;
  ASSERT_TRUE(FillConfig(day.flags, &config).ok());
  EXPECT_TRUE(config.has_idle_ttl_ms());
  EXPECT_EQ(config.idle_ttl_ms(), 86'400'000u);
  Parsed year({"--idle-ttl", "31536000"});  // beyond what 32-bit ms hold
  auto update = ToUpdate(year.flags);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(update->idle_ttl_ms(), uint64_t{31'536'000'000});
  Parsed never({"--idle-ttl", "0"});
  update = ToUpdate(never.flags);
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_TRUE(update->has_idle_ttl_ms());
  EXPECT_EQ(update->idle_ttl_ms(), 0u);
  Parsed unset({"--maxsize", "1"});
  config.Clear();
  ASSERT_TRUE(FillConfig(unset.flags, &config).ok());
  EXPECT_FALSE(config.has_idle_ttl_ms());  // the master's rule decides
  Parsed too_long({"--idle-ttl", "31622400"});  // 366 days
  EXPECT_EQ(ToUpdate(too_long.flags).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace taskq::cli
