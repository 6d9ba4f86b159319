// taskq-soak-bench: the load driver and sampler of bench/soak.sh. It keeps
// the seed's square workload running against a master and its workers for
// a fixed time and records, every --sample-interval, how the master's disk
// and memory evolve under steady put/complete traffic.
//
// Producers put `square` tasks (payload = i, reply_to = a private result
// queue) in batches; a consumer takes the results with long-polling Gets.
// At most --window tasks are in flight, so the load is steady and the
// queues stay short: what grows, if anything, is the store. Every result is
// checked on arrival ("i * i = i*i", OUTCOME_OK, one per task) and then
// forgotten, so the driver's own memory does not grow with the run.
//
// Each sample row: elapsed seconds, tasks completed so far and in the
// interval, latency (put sent -> result received) of the interval, the
// sizes of taskq.db, taskq.db-wal and taskq.db-shm in --data-dir (apparent
// bytes) and the space the whole directory takes (allocated blocks), and
// the master's VmRSS, VmHWM and CPU share (from /proc/--master-pid). At the
// end a verdict: disk and RSS are "bounded" when the largest value of the
// second half of the samples is at most 10% + 1 MiB above the largest of
// the first half.
//
// SIGINT/SIGTERM stop the load early: no more puts, the results in flight
// are awaited (up to 10 s), the summary is printed.
//
// Thread-safety: a program, not a library. The producer and consumer
// threads share a Load, guarded by its mutex; the sampler reads it through
// its methods.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_flags.h"
#include "common/client.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/sync.h"

namespace taskq {
namespace {

struct Options {
  ConnectOptions connect;
  std::string queue = "soak.tasks";
  uint64_t seconds = 600;
  uint64_t sample_interval_s = 10;
  uint64_t window = 1000;
  uint64_t batch = 100;
  uint64_t producers = 2;
  uint64_t min_workers = 0;
  uint64_t stall_timeout_s = 30;
  std::string data_dir;
  uint64_t master_pid = 0;
};

// Fills `options` from argv; the exit status when the program must stop.
std::optional<int> ParseFlags(int argc, char** argv, Options* options) {
  CLI::App app{
      "Runs the square workload for --seconds and prints a sample row every "
      "--sample-interval seconds (sizes of DIR's taskq.db files, the master's RSS from "
      "/proc/PID). Needs taskq-worker processes serving --queue.",
      "taskq-soak-bench"};
  bench::AddConnectFlags(app, &options->connect);
  app.get_option("--master")->required();
  app.get_option("--token-file")->required();
  bench::AddQueueFlag(app, &options->queue, "the task queue the workers serve");
  bench::AddCount<uint64_t>(app, "--seconds", &options->seconds, "how long the load runs", 1,
                            7 * 86400);
  bench::AddCount<uint64_t>(app, "--sample-interval", &options->sample_interval_s,
                            "seconds between sample rows", 1, 3600);
  bench::AddWindowFlag(app, &options->window);
  bench::AddBatchFlag(app, &options->batch);
  bench::AddProducersFlag(app, &options->producers);
  bench::AddMinWorkersFlag(app, &options->min_workers);
  bench::AddStallTimeoutFlag(app, &options->stall_timeout_s);
  bench::AddText(app, "--data-dir", &options->data_dir,
                 "the master's data dir, whose taskq.db files are sampled");
  bench::AddCount<uint64_t>(app, "--master-pid", &options->master_pid,
                            "the master's pid, for its RSS and CPU (0: not sampled)", 0,
                            uint64_t{1} << 30);
  return bench::Parse(app, argc, argv);
}

// Monotonic nanoseconds since the program started.
int64_t NowNs() {
  static const auto kStart = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now() - kStart)
      .count();
}

std::string Describe(const absl::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
}

// Latencies in 0.1 ms buckets up to 60 s (longer ones land in the last):
// constant memory however long the soak runs.
class Histogram {
 public:
  Histogram() : buckets_(kBuckets, 0) {}
  void Add(int64_t ns) {
    int64_t b = std::clamp<int64_t>(ns / 100'000, 0, kBuckets - 1);
    ++buckets_[static_cast<size_t>(b)];
    ++count_;
    max_ns_ = std::max(max_ns_, ns);
  }
  // Upper edge of the bucket holding the p-quantile, in ms.
  double PercentileMs(double p) const {
    if (count_ == 0) return 0;
    uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(p * static_cast<double>(count_)));
    uint64_t seen = 0;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      seen += buckets_[b];
      if (seen >= rank) return std::min(static_cast<double>(b + 1) / 10, MaxMs());
    }
    return MaxMs();
  }
  double MaxMs() const { return static_cast<double>(max_ns_) / 1e6; }
  uint64_t count() const { return count_; }
  void Clear() {
    std::fill(buckets_.begin(), buckets_.end(), 0);
    count_ = 0;
    max_ns_ = 0;
  }

 private:
  static constexpr int64_t kBuckets = 600'000;
  std::vector<uint32_t> buckets_;
  uint64_t count_ = 0;
  int64_t max_ns_ = 0;
};

// One result that arrived before the Put of its task returned.
struct EarlyResult {
  v1::Outcome outcome;
  std::string payload;
  int64_t arrival_ns;
};

// The running load: what is in flight, what was verified, what went wrong.
class Load {
 public:
  explicit Load(uint64_t window) : window_(window) {}

  // Reserves room for `n` tasks and the payload indexes [*first, *first+n);
  // false once stopped.
  bool Acquire(uint64_t n, uint64_t* first) {
    MutexLock lock(&mu_);
    while (!stopped_ && in_flight_ + n > window_ && in_flight_ > 0) {
      cv_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
    }
    if (stopped_) return false;
    in_flight_ += n;
    *first = next_;
    next_ += n;
    return true;
  }

  // The Put of indexes [first, first+ids.size()) returned these ids.
  void Stored(uint64_t first, const std::vector<uint64_t>& ids, int64_t sent_ns) {
    MutexLock lock(&mu_);
    ++puts_;
    for (size_t k = 0; k < ids.size(); ++k) {
      uint64_t i = first + k;
      auto early = early_.find(ids[k]);
      if (early != early_.end()) {
        Check(i, early->second.outcome, early->second.payload, early->second.arrival_ns - sent_ns);
        early_.erase(early);
        continue;
      }
      outstanding_[ids[k]] = Pending{i, sent_ns};
    }
  }

  // A Put failed: its tasks are not in flight, and the run is over.
  void PutFailed(uint64_t n, const absl::Status& status) {
    MutexLock lock(&mu_);
    in_flight_ -= std::min(in_flight_, n);
    if (failure_.empty()) failure_ = absl::StrCat("Put failed: ", Describe(status));
    stopped_ = true;
    cv_.SignalAll();
  }

  void Results(std::vector<v1::Delivery>& deliveries, int64_t arrival_ns) {
    MutexLock lock(&mu_);
    for (v1::Delivery& d : deliveries) {
      v1::Task* t = d.mutable_task();
      auto it = outstanding_.find(t->result_of());
      if (it == outstanding_.end()) {
        // Its Put has not returned yet, or it is a duplicate: Stored() or
        // the end of the run tells.
        auto [slot, fresh] = early_.try_emplace(t->result_of());
        if (!fresh) {
          ++duplicated_;
          continue;
        }
        slot->second = EarlyResult{t->outcome(), std::move(*t->mutable_payload()), arrival_ns};
        continue;
      }
      Check(it->second.index, t->outcome(), t->payload(), arrival_ns - it->second.put_ns);
      outstanding_.erase(it);
    }
  }

  void Fail(std::string reason) {
    MutexLock lock(&mu_);
    if (failure_.empty()) failure_ = std::move(reason);
    stopped_ = true;
    cv_.SignalAll();
  }
  void Stop() {
    MutexLock lock(&mu_);
    stopped_ = true;
    cv_.SignalAll();
  }
  bool stopped() {
    MutexLock lock(&mu_);
    return stopped_;
  }
  uint64_t in_flight() {
    MutexLock lock(&mu_);
    return in_flight_;
  }

  struct Snapshot {
    uint64_t completed, wrong, puts, in_flight;
    double p50_ms, p99_ms, max_ms;  // of the interval
  };
  // Counters so far; starts a new latency interval.
  Snapshot TakeInterval() {
    MutexLock lock(&mu_);
    Snapshot s{completed_, wrong_, puts_, in_flight_, interval_.PercentileMs(0.5),
               interval_.PercentileMs(0.99), interval_.MaxMs()};
    interval_.Clear();
    return s;
  }

  struct Final {
    uint64_t completed, wrong, missing, unexpected, puts;
    double p50_ms, p99_ms, max_ms;
    std::string failure;
  };
  Final Finish() {
    MutexLock lock(&mu_);
    return Final{completed_, wrong_, outstanding_.size(), early_.size() + duplicated_, puts_,
                 total_.PercentileMs(0.5), total_.PercentileMs(0.99), total_.MaxMs(),
                 failure_};
  }

 private:
  struct Pending {
    uint64_t index;
    int64_t put_ns;
  };

  void Check(uint64_t i, v1::Outcome outcome, const std::string& payload, int64_t latency_ns)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    in_flight_ -= std::min<uint64_t>(in_flight_, 1);
    cv_.SignalAll();
    std::string expected = absl::StrCat(i, " * ", i, " = ", i * i);
    if (outcome != v1::OUTCOME_OK || payload != expected) {
      if (wrong_++ < 5) {
        LogError("payload %d: outcome %d, result '%s'; expected '%s'", i,
                 static_cast<int>(outcome), payload, expected);
      }
      return;
    }
    ++completed_;
    interval_.Add(latency_ns);
    total_.Add(latency_ns);
  }

  const uint64_t window_;
  Mutex mu_;
  CondVar cv_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, Pending> outstanding_ ABSL_GUARDED_BY(mu_);  // by task id
  absl::flat_hash_map<uint64_t, EarlyResult> early_ ABSL_GUARDED_BY(mu_);   // by task id
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wrong_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t duplicated_ ABSL_GUARDED_BY(mu_) = 0;  // a second early result for one id
  uint64_t puts_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram interval_ ABSL_GUARDED_BY(mu_);
  Histogram total_ ABSL_GUARDED_BY(mu_);
  std::string failure_ ABSL_GUARDED_BY(mu_);
};

// ---- sampling the master ---------------------------------------------------

struct DiskSample {
  int64_t db = -1, wal = -1, shm = -1;  // apparent bytes; -1 = absent
  int64_t dir_allocated = 0;           // st_blocks of every file, in bytes
};

DiskSample SampleDisk(const std::string& dir) {
  DiskSample s;
  if (dir.empty()) return s;
  auto size_of = [&](const char* name) -> int64_t {
    struct stat st {};
    if (::stat((dir + "/" + name).c_str(), &st) != 0) return -1;
    return st.st_size;
  };
  s.db = size_of("taskq.db");
  s.wal = size_of("taskq.db-wal");
  s.shm = size_of("taskq.db-shm");
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, ec)) {
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) == 0) s.dir_allocated += st.st_blocks * 512;
  }
  return s;
}

struct ProcSample {
  int64_t rss_kb = -1, hwm_kb = -1;
  double cpu_s = -1;  // user + system
};

ProcSample SampleProcess(uint64_t pid) {
  ProcSample s;
  if (pid == 0) return s;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 2) continue;
    if (f[0] == "VmRSS:") (void)absl::SimpleAtoi(f[1], &s.rss_kb);
    if (f[0] == "VmHWM:") (void)absl::SimpleAtoi(f[1], &s.hwm_kb);
  }
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = all.rfind(')');
  if (paren != std::string::npos) {
    // After "comm)": state is field 3; utime and stime are fields 14 and 15.
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(all).substr(paren + 2), ' ', absl::SkipEmpty());
    int64_t utime = 0, stime = 0;
    if (f.size() > 12 && absl::SimpleAtoi(f[11], &utime) && absl::SimpleAtoi(f[12], &stime)) {
      s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  return s;
}

struct Row {
  double elapsed_s;
  Load::Snapshot load;
  double rate;  // tasks/s in the interval
  DiskSample disk;
  ProcSample proc;
  double cpu_share;  // of one core, in the interval
};

std::string Mib(int64_t bytes) {
  return bytes < 0 ? std::string("-") : absl::StrFormat("%.2f", static_cast<double>(bytes) / (1 << 20));
}

void PrintHeader() {
  absl::PrintF("%8s %11s %8s %8s %8s %8s %10s %9s %9s %10s %9s %9s %7s\n", "elapsed", "completed",
               "tasks/s", "p50_ms", "p99_ms", "max_ms", "db_MiB", "wal_MiB", "shm_MiB",
               "dir_MiB", "rss_MiB", "hwm_MiB", "cpu%");
}

void PrintRow(const Row& r) {
  absl::PrintF("%8.1f %11d %8.0f %8.1f %8.1f %8.1f %10s %9s %9s %10s %9s %9s %7.0f\n",
               r.elapsed_s, r.load.completed, r.rate, r.load.p50_ms, r.load.p99_ms,
               r.load.max_ms, Mib(r.disk.db), Mib(r.disk.wal), Mib(r.disk.shm),
               Mib(r.disk.dir_allocated), Mib(r.proc.rss_kb < 0 ? -1 : r.proc.rss_kb * 1024),
               Mib(r.proc.hwm_kb < 0 ? -1 : r.proc.hwm_kb * 1024), r.cpu_share * 100);
  std::fflush(stdout);
}

// "bounded" when the largest value of the second half of the rows is at
// most 10% + 1 MiB above the largest of the first half.
std::string Verdict(const std::vector<Row>& rows, const char* what, int64_t (*value)(const Row&)) {
  if (rows.size() < 4) return absl::StrCat(what, ": too few samples for a verdict");
  size_t half = rows.size() / 2;
  int64_t first = 0, second = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    int64_t v = value(rows[k]);
    (k < half ? first : second) = std::max(k < half ? first : second, v);
  }
  bool bounded = static_cast<double>(second) <= static_cast<double>(first) * 1.10 + (1 << 20);
  return absl::StrFormat("%s: max of first half %s MiB, of second half %s MiB (%+.1f%%): %s", what,
                         Mib(first), Mib(second),
                         first > 0 ? 100.0 * static_cast<double>(second - first) / static_cast<double>(first) : 0.0,
                         bounded ? "BOUNDED" : "GROWING");
}

// ---- the run ---------------------------------------------------------------

absl::Status WaitForWorkers(Client& client, const Options& options) {
  const absl::Time deadline = absl::Now() + absl::Seconds(static_cast<int64_t>(options.stall_timeout_s));
  for (;;) {
    auto stats = client.Stats(options.queue);
    if (!stats.ok()) return stats.status();
    if (stats->workers() >= options.min_workers) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("only ", stats->workers(), " of ",
                                                      options.min_workers, " workers serve ",
                                                      options.queue));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

void Produce(Client& client, const Options& options, const std::string& result_queue, Load* load) {
  PutOptions put_options;
  put_options.timeout = absl::Seconds(60);
  while (!load->stopped()) {
    uint64_t first;
    if (!load->Acquire(options.batch, &first)) return;
    std::vector<v1::TaskSpec> specs(options.batch);
    for (uint64_t k = 0; k < options.batch; ++k) {
      specs[k].set_payload(absl::StrCat(first + k));
      specs[k].set_handler("square");
      specs[k].set_reply_to(result_queue);
    }
    int64_t sent_ns = NowNs();
    auto ids = client.Put(options.queue, std::move(specs), put_options);
    if (!ids.ok()) {
      load->PutFailed(options.batch, ids.status());
      return;
    }
    load->Stored(first, *ids, sent_ns);
  }
}

// Takes results until the load stopped and nothing is in flight (or
// `drain_deadline_ns` passed after the stop), or nothing came for the
// stall timeout.
void Consume(Client& client, const Options& options, const std::string& result_queue,
             Load* load, std::atomic<int64_t>* stop_ns) {
  GetOptions get;
  get.max_tasks = kMaxTasksPerGet;
  get.timeout = absl::Seconds(1);
  int64_t last_progress_ns = NowNs();
  const int64_t stall_ns = static_cast<int64_t>(options.stall_timeout_s) * 1'000'000'000;
  for (;;) {
    if (load->stopped()) {
      if (load->in_flight() == 0) return;
      int64_t stopped_at = stop_ns->load();
      if (stopped_at > 0 && NowNs() - stopped_at > 10'000'000'000) return;
    }
    auto got = client.Get(result_queue, get);
    int64_t now = NowNs();
    if (got.ok()) {
      if (!got->empty()) last_progress_ns = now;
      load->Results(*got, now);
    } else if (got.status().code() != absl::StatusCode::kDeadlineExceeded) {
      load->Fail(absl::StrCat("Get on ", result_queue, " failed: ", Describe(got.status())));
      return;
    }
    if (now - last_progress_ns > stall_ns && load->in_flight() > 0) {
      load->Fail(absl::StrCat("no result for ", options.stall_timeout_s, " s"));
      return;
    }
  }
}

int Main(int argc, char** argv) {
  InitLogging("taskq-soak-bench");
  Options options;
  if (std::optional<int> exit = ParseFlags(argc, argv, &options)) return *exit;
  // Signals are taken by the sampler loop (sigtimedwait), in every thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto client = Client::Connect(options.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "taskq-soak-bench: %s\n", Describe(client.status()).c_str());
    return 1;
  }
  const std::string result_queue = RandomResultQueueName();
  v1::QueueConfig config;
  config.set_name(result_queue);
  absl::Status setup = (*client)->CreateQueue(config).status();
  if (setup.ok()) {
    config.set_name(options.queue);
    setup = (*client)->CreateQueue(config, /*exist_ok=*/true).status();
    if (setup.code() == absl::StatusCode::kAlreadyExists) setup = absl::OkStatus();
  }
  if (setup.ok()) setup = WaitForWorkers(**client, options);
  if (!setup.ok()) {
    std::fprintf(stderr, "taskq-soak-bench: %s\n", Describe(setup).c_str());
    return 1;
  }

  Load load(options.window);
  std::atomic<int64_t> stop_ns{0};
  const int64_t start_ns = NowNs();
  std::vector<std::thread> threads;
  threads.emplace_back([&] { Consume(**client, options, result_queue, &load, &stop_ns); });
  for (uint64_t p = 0; p < options.producers; ++p) {
    threads.emplace_back([&] { Produce(**client, options, result_queue, &load); });
  }

  absl::PrintF("soak: %d s, sample every %d s, window %d, batch %d, %d producers, queue %s\n",
               options.seconds, options.sample_interval_s, options.window, options.batch,
               options.producers, options.queue);
  PrintHeader();
  std::vector<Row> rows;
  ProcSample last_proc = SampleProcess(options.master_pid);
  uint64_t last_completed = 0;
  double last_elapsed = 0;
  const int64_t end_ns = start_ns + static_cast<int64_t>(options.seconds) * 1'000'000'000;
  int64_t next_sample_ns = start_ns + static_cast<int64_t>(options.sample_interval_s) * 1'000'000'000;
  std::string stopped_by;
  for (;;) {
    int64_t now = NowNs();
    if (now >= next_sample_ns) {
      Row row;
      row.elapsed_s = static_cast<double>(now - start_ns) / 1e9;
      row.load = load.TakeInterval();
      row.rate = static_cast<double>(row.load.completed - last_completed) /
                 std::max(1e-9, row.elapsed_s - last_elapsed);
      row.disk = SampleDisk(options.data_dir);
      row.proc = SampleProcess(options.master_pid);
      row.cpu_share = row.proc.cpu_s >= 0 && last_proc.cpu_s >= 0
                          ? (row.proc.cpu_s - last_proc.cpu_s) / (row.elapsed_s - last_elapsed)
                          : 0;
      last_proc = row.proc;
      last_completed = row.load.completed;
      last_elapsed = row.elapsed_s;
      PrintRow(row);
      rows.push_back(row);
      next_sample_ns += static_cast<int64_t>(options.sample_interval_s) * 1'000'000'000;
    }
    if (now >= end_ns || load.stopped()) break;
    // Sleep until the next sample or the end, waking for a signal.
    int64_t wake = std::min(next_sample_ns, end_ns);
    int64_t wait_ns = std::clamp<int64_t>(wake - now, 0, 200'000'000);
    struct timespec ts {
      static_cast<time_t>(wait_ns / 1'000'000'000), static_cast<long>(wait_ns % 1'000'000'000)
    };
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0) {
      stopped_by = sig == SIGINT ? "SIGINT" : "SIGTERM";
      break;
    }
  }
  stop_ns = NowNs();
  load.Stop();
  for (std::thread& t : threads) t.join();
  const double seconds = static_cast<double>(stop_ns.load() - start_ns) / 1e9;

  if (auto s = (*client)->DeleteQueue(result_queue); !s.ok()) {
    LogWarning("deleting result queue %s: %s", result_queue, Describe(s));
  }
  Load::Final f = load.Finish();
  absl::PrintF("\n");
  if (!stopped_by.empty()) absl::PrintF("stopped early by %s\n", stopped_by);
  absl::PrintF("tasks:   %d completed and verified in %.1f s (%.0f tasks/s), %d Puts\n",
               f.completed, seconds, seconds > 0 ? static_cast<double>(f.completed) / seconds : 0,
               f.puts);
  absl::PrintF("latency: p50 %.1f  p99 %.1f  max %.1f ms (put sent -> result received)\n",
               f.p50_ms, f.p99_ms, f.max_ms);
  if (!options.data_dir.empty()) {
    absl::PrintF("%s\n", Verdict(rows, "disk (taskq.db + -wal + -shm)", [](const Row& r) {
                   return std::max<int64_t>(0, r.disk.db) + std::max<int64_t>(0, r.disk.wal) +
                          std::max<int64_t>(0, r.disk.shm);
                 }));
    absl::PrintF("%s\n", Verdict(rows, "taskq.db alone", [](const Row& r) {
                   return std::max<int64_t>(0, r.disk.db);
                 }));
  }
  if (options.master_pid != 0) {
    absl::PrintF("%s\n", Verdict(rows, "master RSS", [](const Row& r) {
                   return r.proc.rss_kb * 1024;
                 }));
  }
  bool ok = f.failure.empty() && f.wrong == 0 && f.missing == 0 && f.unexpected == 0;
  if (!f.failure.empty()) std::fprintf(stderr, "soak: %s\n", f.failure.c_str());
  if (!stopped_by.empty() && f.missing > 0) {
    // A Ctrl-C in a terminal also stops the master and workers: what was in
    // flight then is not a loss the master caused.
    std::fprintf(stderr, "soak: interrupted with %llu tasks in flight (not awaited)\n",
                 static_cast<unsigned long long>(f.missing));
  }
  if (f.wrong + f.missing + f.unexpected > 0) {
    std::fprintf(stderr, "soak FAILED: wrong=%llu missing=%llu unexpected_or_duplicate=%llu\n",
                 static_cast<unsigned long long>(f.wrong),
                 static_cast<unsigned long long>(f.missing),
                 static_cast<unsigned long long>(f.unexpected));
  }
  absl::PrintF("RESULT soak seconds=%.1f completed=%d tasks_per_s=%.0f p50_ms=%.1f p99_ms=%.1f "
               "max_ms=%.1f wrong=%d missing=%d unexpected=%d ok=%d\n",
               seconds, f.completed, seconds > 0 ? static_cast<double>(f.completed) / seconds : 0,
               f.p50_ms, f.p99_ms, f.max_ms, f.wrong, f.missing, f.unexpected, ok ? 1 : 0);
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
