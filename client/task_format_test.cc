// Unit tests of how the CLI shows tasks and queue counters: state names,
// times, one-line cells, `taskq status` lines, and Python's
// qsize/empty/full.
#include "client/task_format.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

TEST(StateName, NamesEveryState) {
  EXPECT_EQ(StateName(v1::TASK_STATE_DELAYED), "delayed");
  EXPECT_EQ(StateName(v1::TASK_STATE_READY), "ready");
  EXPECT_EQ(StateName(v1::TASK_STATE_LEASED), "leased");
  EXPECT_EQ(StateName(v1::TASK_STATE_DONE), "done");
  EXPECT_EQ(StateName(v1::TASK_STATE_DEAD), "dead");
  EXPECT_EQ(StateName(v1::TASK_STATE_CANCELLED), "cancelled");
  EXPECT_EQ(StateName(v1::TASK_STATE_FAILED), "failed");
  EXPECT_EQ(StateName(v1::TASK_STATE_UNSPECIFIED), "unknown");
}

TEST(FormatUnixMs, UtcWithMilliseconds) {
  EXPECT_EQ(FormatUnixMs(1738310400123), "2025-01-31T08:00:00.123Z");
  EXPECT_EQ(FormatUnixMs(0), "");
}

TEST(OneLine, FlattensAndCuts) {
  EXPECT_EQ(OneLine("a\nb\tc\r\n", 100), "a b c");
  EXPECT_EQ(OneLine("abcdef", 3), "abc...");
}

TEST(ShowPayload, EscapesAndCuts) {
  EXPECT_EQ(ShowPayload("hi\n"), "\"hi\\n\"");
  EXPECT_EQ(ShowPayload("abcdef", 2), "\"ab\"...");
}

v1::Task DeadTask() {
  v1::Task t;
  t.set_id(42);
  t.set_queue("jobs");
  t.set_state(v1::TASK_STATE_DEAD);
  t.set_handler("exec");
  t.set_attempt(3);
  t.set_payload("boom");
  t.set_origin_queue("jobs");
  t.set_last_error("exit 3:\nboom");
  t.set_enqueued_unix_ms(1738310400000);
  for (uint32_t i = 1; i <= 3; ++i) {
    v1::Attempt* a = t.add_history();
    a->set_attempt(i);
    a->set_worker("w1");
    a->set_how("failed");
    a->set_error("exit 3");
    a->set_ended_unix_ms(1738310400000 + i);
  }
  return t;
}

TEST(TaskStatusLines, EveryKeyThenHistory) {
  std::vector<std::string> lines = TaskStatusLines(DeadTask());
  std::map<std::string, std::string> kv;
  size_t history_at = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rfind("history:", 0) == 0) {
      history_at = i;
      break;
    }
    auto colon = lines[i].find(':');
    ASSERT_NE(colon, std::string::npos) << lines[i];
    kv[lines[i].substr(0, colon)] =
        colon + 2 <= lines[i].size() ? lines[i].substr(colon + 2) : "";
  }
  for (const char* key : {"id", "queue", "state", "handler", "priority", "attempts", "worker",
                          "last_error", "reply_to", "enqueued", "not_before", "dedup_key",
                          "origin_queue", "payload"}) {
    EXPECT_TRUE(kv.contains(key)) << key;
  }
  EXPECT_EQ(kv["id"], "42");
  EXPECT_EQ(kv["state"], "dead");
  EXPECT_EQ(kv["attempts"], "3");
  EXPECT_EQ(kv["last_error"], "exit 3: boom");  // one line
  EXPECT_EQ(kv["worker"], "");
  EXPECT_EQ(kv["payload"], "\"boom\"");
  EXPECT_EQ(kv["enqueued"], "2025-01-31T08:00:00.000Z");
  ASSERT_EQ(lines.size(), history_at + 4);
  EXPECT_EQ(lines[history_at], "history:");
  EXPECT_EQ(lines[history_at + 1], "  1  2025-01-31T08:00:00.001Z  w1  failed  exit 3");
}

TEST(TaskStatusLines, NoHistory) {
  v1::Task t;
  t.set_id(1);
  t.set_state(v1::TASK_STATE_READY);
  EXPECT_THAT(TaskStatusLines(t), Contains("history: none"));
  EXPECT_THAT(TaskStatusLines(t), Contains("worker:"));  // no trailing space
}

TEST(SizesOf, PythonQsizeEmptyFull) {
  v1::QueueStats s;
  EXPECT_EQ(SizesOf(s).qsize, 0u);
  EXPECT_TRUE(SizesOf(s).empty);
  EXPECT_FALSE(SizesOf(s).full);  // unbounded
  s.set_ready(2);
  s.set_delayed(1);
  s.set_leased(4);
  EXPECT_EQ(SizesOf(s).qsize, 3u);  // leased ones were handed out
  EXPECT_FALSE(SizesOf(s).empty);
  EXPECT_FALSE(SizesOf(s).full);
  s.mutable_config()->set_maxsize(7);
  EXPECT_TRUE(SizesOf(s).full);  // leased tasks still hold room
  s.mutable_config()->set_maxsize(8);
  EXPECT_FALSE(SizesOf(s).full);
  s.set_ready(0);
  s.set_delayed(0);
  EXPECT_TRUE(SizesOf(s).empty);
}

TEST(StatsFields, NewCountersAndDefaults) {
  v1::QueueStats s;
  s.mutable_config()->set_name("q");
  s.set_dead(5);
  s.set_shut_down(true);
  s.set_total_cancelled(2);
  std::map<std::string, std::string> kv;
  for (const auto& [k, v] : StatsFields(s)) {
    EXPECT_FALSE(kv.contains(k)) << "duplicate key " << k;
    kv[k] = v;
  }
  EXPECT_EQ(kv["dead_letter"], "q");  // its own
  EXPECT_EQ(kv["dead"], "5");
  EXPECT_EQ(kv["shut_down"], "true");
  EXPECT_EQ(kv["total_cancelled"], "2");
  EXPECT_EQ(kv["qsize"], "0");
  EXPECT_EQ(kv["empty"], "true");
  EXPECT_EQ(kv["full"], "false");
  for (const char* key : {"name", "kind", "maxsize", "lease_ms", "max_attempts", "backoff_ms",
                          "backoff_max_ms", "ready", "delayed", "leased", "unfinished",
                          "total_put", "total_completed", "total_failed", "waiting_consumers",
                          "waiting_producers", "workers"}) {
    EXPECT_TRUE(kv.contains(key)) << key;
  }
}

TEST(StatsFields, IdleTtlAndPendingResults) {
  v1::QueueStats s;
  s.mutable_config()->set_name("_results.a");
  s.mutable_config()->set_idle_ttl_ms(86'400'000);
  s.set_pending_results(3);
  std::map<std::string, std::string> kv;
  for (const auto& [k, v] : StatsFields(s)) kv[k] = v;
  EXPECT_EQ(kv["idle_ttl_ms"], "86400000");
  EXPECT_EQ(kv["pending_results"], "3");
}

TEST(EscapeForTerminal, EscapesWhatCanMoveTheCursorOrChangeTheTerminal) {
  EXPECT_EQ(EscapeForTerminal("\x1b[2J\x1b]0;title\x07"), "\\x1b[2J\\x1b]0;title\\x07");
  EXPECT_EQ(EscapeForTerminal("over\rwrite\b!"), "over\\x0dwrite\\x08!");
  EXPECT_EQ(EscapeForTerminal(std::string("nul\0end", 7)), "nul\\x00end");
  EXPECT_EQ(EscapeForTerminal("del\x7f"), "del\\u007f");
  // C1 controls: 8-bit CSI as UTF-8 (U+009B) and as a lone byte.
  EXPECT_EQ(EscapeForTerminal("\xc2\x9b" "31m"), "\\u009b31m");
  EXPECT_EQ(EscapeForTerminal("\x9b" "31m"), "\\x9b31m");
  // Bidirectional override (U+202E) reorders what follows on screen.
  EXPECT_EQ(EscapeForTerminal("a\xe2\x80\xae" "b"), "a\\u202eb");
}

TEST(EscapeForTerminal, KeepsTextNewlinesAndTabs) {
  EXPECT_EQ(EscapeForTerminal("plain text 123 ~!@#$%^&*()\\"), "plain text 123 ~!@#$%^&*()\\");
  EXPECT_EQ(EscapeForTerminal("two\nlines\tand a tab"), "two\nlines\tand a tab");
  // Valid UTF-8: 2, 3 and 4 bytes.
  EXPECT_EQ(EscapeForTerminal("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
  EXPECT_EQ(EscapeForTerminal(""), "");
}

TEST(EscapeForTerminal, EscapesBytesThatAreNotUtf8) {
  // Overlong, a surrogate, truncated sequences, above U+10FFFF.
  EXPECT_EQ(EscapeForTerminal("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(EscapeForTerminal("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  EXPECT_EQ(EscapeForTerminal("x\xe2\x9c"), "x\\xe2\\x9c");
  EXPECT_EQ(EscapeForTerminal("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");
  // A lone lead byte before ESC: both escaped, nothing swallowed.
  EXPECT_EQ(EscapeForTerminal("\xc3\x1b"), "\\xc3\\x1b");
}

}  // namespace
}  // namespace taskq::cli
