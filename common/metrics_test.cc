#include "common/metrics.h"

#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace taskq::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterAndGaugeRenderWithHelpAndType) {
  Registry r;
  Counter* c = r.AddCounter("taskq_things_total", "Things done.");
  Gauge* g = r.AddGauge("taskq_level", "A level.");
  c->Add();
  c->Add(4);
  g->Set(2.5);
  EXPECT_EQ(r.Render(),
            "# HELP taskq_things_total Things done.\n"
            "# TYPE taskq_things_total counter\n"
            "taskq_things_total 5\n"
            "# HELP taskq_level A level.\n"
            "# TYPE taskq_level gauge\n"
            "taskq_level 2.5\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry r;
  Histogram* h = r.AddHistogram("taskq_wait_seconds", "Waits.", {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.1);  // on a bound: counted in it (le)
  h->Observe(0.5);
  h->Observe(7);
  EXPECT_EQ(r.Render(),
            "# HELP taskq_wait_seconds Waits.\n"
            "# TYPE taskq_wait_seconds histogram\n"
            "taskq_wait_seconds_bucket{le=\"0.1\"} 2\n"
            "taskq_wait_seconds_bucket{le=\"1\"} 3\n"
            "taskq_wait_seconds_bucket{le=\"+Inf\"} 4\n"
            "taskq_wait_seconds_sum 7.65\n"
            "taskq_wait_seconds_count 4\n");
}

TEST(MetricsTest, LabelValuesAreEscapedAndSeriesSorted) {
  Registry r;
  auto* f = r.AddCounterFamily("taskq_rpcs_total", "RPCs.", {"method", "code"});
  f->With({"Put", "OK"})->Add(2);
  f->With({"Get", "a \"b\"\\c\nd"})->Add();
  EXPECT_EQ(f->With({"Put", "OK"}), f->With({"Put", "OK"}));  // same series, same pointer
  EXPECT_EQ(r.Render(),
            "# HELP taskq_rpcs_total RPCs.\n"
            "# TYPE taskq_rpcs_total counter\n"
            "taskq_rpcs_total{method=\"Get\",code=\"a \\\"b\\\"\\\\c\\nd\"} 1\n"
            "taskq_rpcs_total{method=\"Put\",code=\"OK\"} 2\n");
}

TEST(MetricsTest, HelpIsEscaped) {
  TextWriter w;
  w.Family("taskq_x", "back\\slash\nnewline \"quotes stay\"", Type::kGauge);
  EXPECT_EQ(w.text(), "# HELP taskq_x back\\\\slash\\nnewline \"quotes stay\"\n# TYPE taskq_x gauge\n");
}

TEST(MetricsTest, HistogramFamilyPutsLeAfterItsLabels) {
  Registry r;
  auto* f = r.AddHistogramFamily("taskq_h_seconds", "H.", {"queue"}, {1});
  f->With({"q"})->Observe(2);
  EXPECT_THAT(r.Render(), HasSubstr("taskq_h_seconds_bucket{queue=\"q\",le=\"1\"} 0\n"
                                    "taskq_h_seconds_bucket{queue=\"q\",le=\"+Inf\"} 1\n"
                                    "taskq_h_seconds_sum{queue=\"q\"} 2\n"
                                    "taskq_h_seconds_count{queue=\"q\"} 1\n"));
}

TEST(MetricsTest, CollectorsWriteAtScrapeTime) {
  Registry r;
  int calls = 0;
  r.AddCollector([&calls](TextWriter& w) {
    ++calls;
    w.Family("taskq_queues", "Queues.", Type::kGauge);
    w.Sample("taskq_queues", {{"x", "y"}}, calls);
  });
  EXPECT_THAT(r.Render(), HasSubstr("taskq_queues{x=\"y\"} 1\n"));
  EXPECT_THAT(r.Render(), HasSubstr("taskq_queues{x=\"y\"} 2\n"));
}

TEST(MetricsTest, ValuesFormatAsPrometheusParsesThem) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(12345678901234), "12345678901234");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricsTest, NamesAreChecked) {
  EXPECT_TRUE(ValidName("taskq_rpcs_total"));
  EXPECT_TRUE(ValidName("a:b_c9"));
  EXPECT_FALSE(ValidName(""));
  EXPECT_FALSE(ValidName("9lives"));
  EXPECT_FALSE(ValidName("has-dash"));
  EXPECT_FALSE(ValidName("sp ace"));
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  Registry r;
  Counter* c = r.AddCounter("taskq_c_total", "C.");
  Histogram* h = r.AddHistogram("taskq_h", "H.", {1, 10});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Add();
        h->Observe(i % 3);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), 40000u);
  Histogram::Snapshot s = h->Read();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_EQ(s.cumulative[0], 4u * 6667u);  // 0 and 1 of every three
  EXPECT_DOUBLE_EQ(s.sum, 4 * (3333.0 * 1 + 3333.0 * 2));
}

TEST(MetricsTest, ExponentialBuckets) {
  EXPECT_THAT(ExponentialBuckets(1, 2, 4), ::testing::ElementsAre(1, 2, 4, 8));
}

}  // namespace
}  // namespace taskq::metrics
