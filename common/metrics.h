// metrics: a small Prometheus registry and its text exposition format
// (version 0.0.4), for the master's and the worker's /metrics.
//
//   metrics::Registry registry;
//   metrics::Counter* puts = registry.AddCounter("taskq_puts_total", "Tasks put.");
//   puts->Add();                                    // hot path: one relaxed atomic add
//   auto* rpcs = registry.AddCounterFamily("taskq_rpcs_total", "RPCs answered.",
//                                          {"method", "code"});
//   metrics::Counter* ok = rpcs->With({"Put", "OK"});  // look up once, keep the pointer
//   registry.AddCollector([&](metrics::TextWriter& w) {   // values read at scrape time
//     w.Family("taskq_queues", "Queues the master holds.", metrics::Type::kGauge);
//     w.Sample("taskq_queues", {}, engine.QueueCount());
//   });
//   std::string text = registry.Render();
//
// Counters, gauges and histograms are atomics: updating one takes no lock
// (a histogram is one add on its bucket, its count and its sum). Families
// with labels find a label set's series under a mutex; callers on hot
// paths look it up once and keep the pointer (series are never removed, so
// pointers stay valid for the registry's life). Series whose values already
// live elsewhere (the engine's per-queue totals, /proc) are not copied into
// the registry but written at scrape time by collectors.
//
// Rendering follows the text format: a `# HELP` and `# TYPE` line per
// family, label values escaped (backslash, double quote, newline), help
// escaped (backslash, newline), histograms as cumulative `_bucket{le=...}`
// lines ending in `le="+Inf"`, plus `_sum` and `_count`. Names are checked
// against [a-zA-Z_:][a-zA-Z0-9_:]* when registered (a bad name is a
// programming error: it aborts).
//
// Thread-safety: everything is safe from any thread. Registration and
// Render take the registry's mutex; collectors run under it, in
// registration order, and must not register anything.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "common/sync.h"

namespace taskq::metrics {

enum class Type { kCounter, kGauge, kHistogram };

// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;
// name=value pairs of one sample.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count.
class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets (upper bounds, ascending; +Inf
// is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (= count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Bucket bounds: `count` bounds from `start`, each `factor` times the last.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Seconds from 100 µs to ~100 s (x ~2.5 steps): latencies of calls and tasks.
std::vector<double> LatencySecondsBuckets();

// Writes the text format. Collectors get one to write their families with.
class TextWriter {
 public:
  // Starts a family: its HELP and TYPE lines. Samples follow.
  void Family(absl::string_view name, absl::string_view help, Type type);
  // One sample line: name{labels} value.
  void Sample(absl::string_view name, const Labels& labels, double value);
  // A histogram's bucket, sum and count lines under `labels`.
  void HistogramSamples(absl::string_view name, const Labels& labels,
                        const Histogram::Snapshot& h);
  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Escapes a label value (\\, \", \n) and a HELP text (\\, \n).
std::string EscapeLabelValue(absl::string_view v);
std::string EscapeHelp(absl::string_view v);
// Formats a sample value as Prometheus parses it (integers without a
// fraction, NaN, +Inf, -Inf).
std::string FormatValue(double v);
// True for a valid metric or label name.
bool ValidName(absl::string_view name);

// Series of one name that differ by label values.
template <typename T>
class Family {
 public:
  Family(std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}
  // The series for `values` (one per label name), made on first use.
  T* With(const LabelValues& values);
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Every series, sorted by label values.
  std::vector<std::pair<LabelValues, const T*>> Series() const;

 private:
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<T>()> make_;
  mutable Mutex mu_;
  absl::flat_hash_map<LabelValues, std::unique_ptr<T>> series_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Counter* AddCounter(std::string name, std::string help);
  Gauge* AddGauge(std::string name, std::string help);
  Histogram* AddHistogram(std::string name, std::string help, std::vector<double> bounds);
  Family<Counter>* AddCounterFamily(std::string name, std::string help,
                                    std::vector<std::string> label_names);
  Family<Gauge>* AddGaugeFamily(std::string name, std::string help,
                                std::vector<std::string> label_names);
  Family<Histogram>* AddHistogramFamily(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds);
  // Writes series computed at scrape time (after the registered ones).
  void AddCollector(std::function<void(TextWriter&)> collect);

  // The whole exposition, families in registration order.
  std::string Render() const;

 private:
  // One registered family: writes itself.
  struct Entry {
    std::function<void(TextWriter&)> write;
  };
  void Add(std::function<void(TextWriter&)> write) ABSL_LOCKS_EXCLUDED(mu_);
  static void CheckName(const std::string& name);

  mutable Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Owned metrics (pointers handed out stay valid).
  std::vector<std::unique_ptr<Counter>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Gauge>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Histogram>> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Counter>>> counter_families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Gauge>>> gauge_families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Histogram>>> histogram_families_ ABSL_GUARDED_BY(mu_);
};

// --- Family<T> ----------------------------------------------------------------

template <typename T>
T* Family<T>::With(const LabelValues& values) {
  MutexLock lock(&mu_);
  auto it = series_.find(values);
  if (it == series_.end()) it = series_.emplace(values, make_()).first;
  return it->second.get();
}

template <typename T>
std::vector<std::pair<LabelValues, const T*>> Family<T>::Series() const {
  std::vector<std::pair<LabelValues, const T*>> out;
  {
    MutexLock lock(&mu_);
    out.reserve(series_.size());
    for (const auto& [values, series] : series_) out.emplace_back(values, series.get());
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

}  // namespace taskq::metrics
