#include "common/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace taskq::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // The first bound >= v; the text format's buckets are "le" (<=).
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  out.reserve(count);
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

std::vector<double> LatencySecondsBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   25,    50,   100};
}

std::string EscapeLabelValue(absl::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers (counts, bytes) exactly; everything else with enough digits
  // to read back the same double.
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  // Shortest form that reads back as the same double ("0.1", not
  // "0.10000000000000001").
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

bool ValidName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_' ||
                    c == ':' || (i > 0 && absl::ascii_isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

namespace {

const char* TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void AppendLabels(std::string& out, const Labels& labels, absl::string_view extra_name = {},
                  absl::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](absl::string_view name, absl::string_view value) {
    if (!first) out += ',';
    first = false;
    absl::StrAppend(&out, name, "=\"", EscapeLabelValue(value), "\"");
  };
  for (const auto& [name, value] : labels) one(name, value);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out += '}';
}

Labels Zip(const std::vector<std::string>& names, const LabelValues& values) {
  Labels out;
  out.reserve(names.size());
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out.emplace_back(names[i], values[i]);
  }
  return out;
}

}  // namespace

void TextWriter::Family(absl::string_view name, absl::string_view help, Type type) {
  absl::StrAppend(&out_, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ",
                  TypeName(type), "\n");
}

void TextWriter::Sample(absl::string_view name, const Labels& labels, double value) {
  out_.append(name.data(), name.size());
  AppendLabels(out_, labels);
  absl::StrAppend(&out_, " ", FormatValue(value), "\n");
}

void TextWriter::HistogramSamples(absl::string_view name, const Labels& labels,
                                  const Histogram::Snapshot& h) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i <= h.bounds.size(); ++i) {
    out_ += bucket;
    AppendLabels(out_, labels, "le", i < h.bounds.size() ? FormatValue(h.bounds[i]) : "+Inf");
    absl::StrAppend(&out_, " ", h.cumulative[i], "\n");
  }
  Sample(absl::StrCat(name, "_sum"), labels, h.sum);
  Sample(absl::StrCat(name, "_count"), labels, static_cast<double>(h.count));
}

void Registry::CheckName(const std::string& name) {
  if (!ValidName(name)) {
    LogError("metrics: invalid metric name \"%s\"", name);
    std::abort();
  }
}

void Registry::Add(std::function<void(TextWriter&)> write) {
  MutexLock lock(&mu_);
  entries_.push_back({std::move(write)});
}

Counter* Registry::AddCounter(std::string name, std::string help) {
  CheckName(name);
  auto owned = std::make_unique<Counter>();
  Counter* c = owned.get();
  {
    MutexLock lock(&mu_);
    counters_.push_back(std::move(owned));
  }
  Add([c, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kCounter);
    w.Sample(name, {}, static_cast<double>(c->value()));
  });
  return c;
}

Gauge* Registry::AddGauge(std::string name, std::string help) {
  CheckName(name);
  auto owned = std::make_unique<Gauge>();
  Gauge* g = owned.get();
  {
    MutexLock lock(&mu_);
    gauges_.push_back(std::move(owned));
  }
  Add([g, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kGauge);
    w.Sample(name, {}, g->value());
  });
  return g;
}

Histogram* Registry::AddHistogram(std::string name, std::string help, std::vector<double> bounds) {
  CheckName(name);
  auto owned = std::make_unique<Histogram>(std::move(bounds));
  Histogram* h = owned.get();
  {
    MutexLock lock(&mu_);
    histograms_.push_back(std::move(owned));
  }
  Add([h, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kHistogram);
    w.HistogramSamples(name, {}, h->Read());
  });
  return h;
}

Family<Counter>* Registry::AddCounterFamily(std::string name, std::string help,
                                            std::vector<std::string> label_names) {
  CheckName(name);
  for (const auto& l : label_names) CheckName(l);
  auto owned = std::make_unique<Family<Counter>>(std::move(label_names),
                                                 [] { return std::make_unique<Counter>(); });
  Family<Counter>* f = owned.get();
  {
    MutexLock lock(&mu_);
    counter_families_.push_back(std::move(owned));
  }
  Add([f, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kCounter);
    for (const auto& [values, c] : f->Series()) {
      w.Sample(name, Zip(f->label_names(), values), static_cast<double>(c->value()));
    }
  });
  return f;
}

Family<Gauge>* Registry::AddGaugeFamily(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  CheckName(name);
  for (const auto& l : label_names) CheckName(l);
  auto owned = std::make_unique<Family<Gauge>>(std::move(label_names),
                                               [] { return std::make_unique<Gauge>(); });
  Family<Gauge>* f = owned.get();
  {
    MutexLock lock(&mu_);
    gauge_families_.push_back(std::move(owned));
  }
  Add([f, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kGauge);
    for (const auto& [values, g] : f->Series()) {
      w.Sample(name, Zip(f->label_names(), values), g->value());
    }
  });
  return f;
}

Family<Histogram>* Registry::AddHistogramFamily(std::string name, std::string help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bounds) {
  CheckName(name);
  for (const auto& l : label_names) CheckName(l);
  auto owned = std::make_unique<Family<Histogram>>(
      std::move(label_names), [bounds] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>* f = owned.get();
  {
    MutexLock lock(&mu_);
    histogram_families_.push_back(std::move(owned));
  }
  Add([f, name = std::move(name), help = std::move(help)](TextWriter& w) {
    w.Family(name, help, Type::kHistogram);
    for (const auto& [values, h] : f->Series()) {
      w.HistogramSamples(name, Zip(f->label_names(), values), h->Read());
    }
  });
  return f;
}

void Registry::AddCollector(std::function<void(TextWriter&)> collect) { Add(std::move(collect)); }

std::string Registry::Render() const {
  TextWriter w;
  MutexLock lock(&mu_);
  for (const Entry& e : entries_) e.write(w);
  return w.Take();
}

}  // namespace taskq::metrics
