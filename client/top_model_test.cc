// Unit tests of what `taskq top` shows: rates from two samples, sorting,
// the sort keys, and fitting the screen (long names cut, rows beyond the
// height counted, every line within the width).
#include "client/top_model.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

v1::QueueStats Stats(const std::string& name, uint64_t ready, uint64_t put, uint64_t completed,
                     uint64_t failed = 0) {
  v1::QueueStats s;
  s.mutable_config()->set_name(name);
  s.set_ready(ready);
  s.set_total_put(put);
  s.set_total_completed(completed);
  s.set_total_failed(failed);
  return s;
}

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(QueueRows, RatesFromTheDifferenceOfTwoSamples) {
  QueueSample before{{Stats("a", 5, 100, 50, 1), Stats("gone", 0, 0, 0)}, kT0};
  QueueSample now{{Stats("a", 7, 120, 60, 2), Stats("new", 1, 1, 0)}, kT0 + absl::Seconds(2)};
  std::vector<QueueRow> rows = QueueRows(now, &before);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "a");
  EXPECT_EQ(rows[0].ready, 7u);
  EXPECT_DOUBLE_EQ(rows[0].put_rate.value(), 10);
  EXPECT_DOUBLE_EQ(rows[0].done_rate.value(), 5);
  EXPECT_DOUBLE_EQ(rows[0].fail_rate.value(), 0.5);
  // Seen once: no rate yet.
  EXPECT_EQ(rows[1].name, "new");
  EXPECT_FALSE(rows[1].put_rate.has_value());
}

TEST(QueueRows, NoRateWithoutAPreviousSampleOrAfterARestart) {
  QueueSample now{{Stats("a", 0, 10, 10)}, kT0};
  EXPECT_FALSE(QueueRows(now, nullptr)[0].put_rate.has_value());
  // A restarted master counts from zero again: no negative rate.
  QueueSample before{{Stats("a", 0, 500, 500)}, kT0 - absl::Seconds(1)};
  EXPECT_FALSE(QueueRows(now, &before)[0].put_rate.has_value());
}

TEST(SortRows, NumbersDescendNamesAscend) {
  std::vector<QueueRow> rows(3);
  rows[0].name = "b";
  rows[0].ready = 1;
  rows[1].name = "c";
  rows[1].ready = 9;
  rows[2].name = "a";
  rows[2].ready = 1;
  rows[2].put_rate = 3;
  SortRows(SortKey::kReady, &rows);
  EXPECT_EQ(rows[0].name, "c");
  EXPECT_EQ(rows[1].name, "a");  // tie on ready: by name
  EXPECT_EQ(rows[2].name, "b");
  SortRows(SortKey::kPutRate, &rows);
  EXPECT_EQ(rows[0].name, "a");  // unknown rates last
  SortRows(SortKey::kName, &rows);
  EXPECT_EQ(rows[0].name, "a");
  EXPECT_EQ(rows[2].name, "c");
}

TEST(SortKeys, LettersAndCycle) {
  EXPECT_EQ(SortKeyForKey('r'), SortKey::kReady);
  EXPECT_EQ(SortKeyForKey('c'), SortKey::kDoneRate);
  EXPECT_FALSE(SortKeyForKey('x').has_value());
  SortKey key = SortKey::kName;
  for (int i = 0; i < 6; ++i) key = NextSortKey(key);
  EXPECT_EQ(key, SortKey::kName);
  EXPECT_EQ(NextSortKey(SortKey::kName), SortKey::kReady);
}

TEST(Format, RatesAndAges) {
  EXPECT_EQ(FormatRate(std::nullopt), "-");
  EXPECT_EQ(FormatRate(0), "0");
  EXPECT_EQ(FormatRate(2.25), "2.2");
  EXPECT_EQ(FormatRate(123.4), "123");
  EXPECT_EQ(FormatRate(9.99), "10");
  EXPECT_EQ(FormatRate(9999.7), "10.0k");
  EXPECT_EQ(FormatRate(45678), "45.7k");
  EXPECT_EQ(FormatRate(12.5e6), "12.5M");
  EXPECT_EQ(FormatAge(absl::Seconds(45)), "45s");
  EXPECT_EQ(FormatAge(absl::Minutes(12)), "12m");
  EXPECT_EQ(FormatAge(absl::Hours(50)), "2d");
  EXPECT_EQ(FormatAge(-absl::Seconds(3)), "0s");  // clocks apart
}

TopView ViewWith(size_t queues, size_t workers) {
  TopView view;
  view.master = "127.0.0.1:5000";
  view.now = kT0;
  for (size_t i = 0; i < queues; ++i) {
    QueueRow& row = view.queues.emplace_back();
    row.name = std::string(40, 'q') + std::to_string(i);
    row.ready = i;
  }
  if (workers > 0) {
    view.workers.emplace();
    for (size_t i = 0; i < workers; ++i) {
      view.workers->push_back({.id = "w" + std::to_string(i),
                               .host = "host",
                               .since = kT0 - absl::Minutes(3),
                               .credits = 4,
                               .running = 1,
                               .queues = {"tasks", "other"}});
    }
  }
  return view;
}

TEST(RenderTop, FitsTheWidthAndHeight) {
  const std::vector<std::string> lines = RenderTop(ViewWith(30, 5), 80, 24);
  ASSERT_EQ(lines.size(), 24u);
  for (const std::string& line : lines) EXPECT_LE(line.size(), 80u) << line;
  EXPECT_TRUE(absl::StartsWith(lines[0], "taskq top  master 127.0.0.1:5000")) << lines[0];
  // Long names cut with '~'; rows beyond the room counted.
  EXPECT_TRUE(absl::StrContains(lines[3], "~")) << lines[3];
  bool more = false, workers = false;
  for (const std::string& line : lines) {
    more = more || absl::StrContains(line, "more queues");
    workers = workers || absl::StartsWith(line, "WORKER");
  }
  EXPECT_TRUE(more);
  EXPECT_TRUE(workers);  // the workers keep a few lines
  EXPECT_TRUE(absl::StartsWith(lines.back(), "q quit")) << lines.back();
}

TEST(RenderTop, PlainModeIsUnbounded) {
  TopView view = ViewWith(3, 1);
  view.interactive = false;
  const std::vector<std::string> lines = RenderTop(view, 0, 0);
  // Title, blank, heading + 3, blank, heading + 1; no key help.
  ASSERT_EQ(lines.size(), 9u);
  EXPECT_TRUE(absl::StrContains(lines[3], std::string(40, 'q') + "0")) << lines[3];
  EXPECT_TRUE(absl::StartsWith(lines[8], "w0")) << lines[8];
  EXPECT_TRUE(absl::StrContains(lines[8], "3m")) << lines[8];
  EXPECT_TRUE(absl::StrContains(lines[8], "tasks,other")) << lines[8];
}

TEST(RenderTop, NamesFromTheMasterAreEscaped) {
  TopView view = ViewWith(0, 0);
  view.queues.emplace_back().name = "evil\x1b[2Jname\xc3\xa9";
  for (const std::string& line : RenderTop(view, 0, 0)) {
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
    for (unsigned char c : line) EXPECT_LT(c, 0x80) << line;
  }
}

TEST(RenderTop, StatusLineShowsTheError) {
  TopView view = ViewWith(1, 0);
  view.status = "cannot reach the master (connection refused); retrying";
  const std::vector<std::string> lines = RenderTop(view, 100, 10);
  EXPECT_EQ(lines.back(), view.status);
  // A tiny terminal still gets title and status, nothing wider.
  for (const std::string& line : RenderTop(view, 10, 3)) EXPECT_LE(line.size(), 10u);
}

}  // namespace
}  // namespace taskq::cli
