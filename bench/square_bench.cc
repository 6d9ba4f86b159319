// taskq-square-bench: end-to-end throughput and latency of the seed's
// "square" workload against a running master and workers.
//
// Producers put N `square` tasks (payload = i) in batches, each with
// reply_to = a private result queue; one consumer drains that queue with
// long-polling Get(TAKE). At most --window tasks are in flight (put, no
// result yet), so producers are paced by results the way a credit window
// paces a real client, and the master's queues stay bounded.
// Every task must yield exactly one OK result "i * i = i*i"; anything
// missing, duplicated, unexpected or wrong makes the exit status non-zero.
//
// Thread-safety: a program, not a library. State shared by the producer
// and consumer threads of one run lives in Phase, guarded by its mutex.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/resource.h>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bench/bench_flags.h"
#include "common/channel.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/sync.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {
namespace {

namespace v1 = ::taskq::v1;

struct Options {
  ConnectOptions connect;
  uint64_t tasks = 100000;
  uint64_t batch = 500;
  std::string queue = "bench.tasks";
  uint64_t window = 1000;
  uint64_t warmup = 1000;
  uint64_t producers = 2;
  uint64_t stall_timeout_s = 30;
  uint64_t min_workers = 0;
};

// Fills `options` from argv; the exit status when the program must stop.
std::optional<int> ParseFlags(int argc, char** argv, Options* options) {
  CLI::App app{
      "Puts N `square` tasks on QUEUE and waits for all their results on a private "
      "result queue. Needs a running master and taskq-worker processes serving QUEUE "
      "(see bench/square.sh).",
      "taskq-square-bench"};
  bench::AddConnectFlags(app, &options->connect);
  bench::AddQueueFlag(app, &options->queue, "the task queue the workers serve");
  bench::AddCount<uint64_t>(app, "--tasks", &options->tasks, "tasks measured", 1,
                            uint64_t{1} << 32);
  bench::AddBatchFlag(app, &options->batch);
  bench::AddWindowFlag(app, &options->window);
  bench::AddCount<uint64_t>(app, "--warmup", &options->warmup,
                            "tasks run and checked before measuring", 0, uint64_t{1} << 32);
  bench::AddProducersFlag(app, &options->producers);
  bench::AddStallTimeoutFlag(app, &options->stall_timeout_s);
  bench::AddMinWorkersFlag(app, &options->min_workers);
  return bench::Parse(app, argc, argv);
}

// Monotonic nanoseconds since the program started.
int64_t NowNs() {
  static const auto kStart = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now() - kStart)
      .count();
}

std::string ExpectedResult(uint64_t n) {
  return absl::StrCat(n, " * ", n, " = ", n * n);
}

std::string DescribeStatus(const grpc::Status& status) {
  return absl::StrCat("code ", static_cast<int>(status.error_code()), ": ",
                      status.error_message());
}

// One result message as it arrived.
struct Arrival {
  uint64_t result_of = 0;
  int64_t arrival_ns = 0;
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  std::string payload;
  std::string error;
};

// What a finished run measured and found.
struct Report {
  uint64_t tasks = 0;
  double seconds = 0;
  std::vector<int64_t> latencies_ns;  // sorted, one per verified result
  uint64_t missing = 0, duplicated = 0, wrong = 0, unexpected = 0;
  uint64_t put_calls = 0, get_calls = 0;
  int64_t put_rtt_sum_ns = 0, put_rtt_max_ns = 0;
  std::string abort_reason;  // non-empty if the run was cut short

  bool ok() const {
    return abort_reason.empty() && missing == 0 && duplicated == 0 &&
           wrong == 0 && unexpected == 0;
  }
};

// The shared state of one run of `count` tasks with payloads 0..count-1.
// Producers claim batches, reserve window room, and record the ids the
// master assigned; the consumer records results. A result may arrive before
// its producer recorded the Put's ids, so matching happens in Finish().
class Phase {
 public:
  Phase(uint64_t count, uint64_t window)
      : count_(count), window_(window), ids_(count, 0), put_ns_(count, 0) {
    index_of_id_.reserve(count);
    seen_.reserve(count);
  }

  // Next batch of payload indexes [*begin, *end); false when all claimed or
  // the run was aborted.
  bool ClaimBatch(uint64_t batch, uint64_t* begin, uint64_t* end) {
    MutexLock lock(&mu_);
    if (!abort_reason_.empty() || next_ >= count_) return false;
    *begin = next_;
    *end = std::min(count_, next_ + batch);
    next_ = *end;
    return true;
  }

  // Blocks until `n` more tasks fit in the window; false if aborted.
  bool AcquireWindow(uint64_t n) {
    MutexLock lock(&mu_);
    while (abort_reason_.empty() && in_flight_ + n > window_ && in_flight_ > 0) {
      cv_.Wait(&mu_);
    }
    if (!abort_reason_.empty()) return false;
    in_flight_ += n;
    return true;
  }

  void RecordPut(uint64_t begin, const v1::PutResponse& response,
                 int64_t sent_ns, int64_t rtt_ns) {
    MutexLock lock(&mu_);
    for (int k = 0; k < response.ids_size(); ++k) {
      uint64_t i = begin + static_cast<uint64_t>(k);
      ids_[i] = response.ids(k);
      put_ns_[i] = sent_ns;
      index_of_id_[response.ids(k)] = i;
    }
    ++put_calls_;
    put_rtt_sum_ns_ += rtt_ns;
    put_rtt_max_ns_ = std::max(put_rtt_max_ns_, rtt_ns);
  }

  // Takes the results of one Get. Returns how many were new.
  size_t RecordResults(v1::GetResponse* response, int64_t arrival_ns) {
    MutexLock lock(&mu_);
    ++get_calls_;
    size_t fresh = 0;
    for (v1::Delivery& delivery : *response->mutable_deliveries()) {
      v1::Task* task = delivery.mutable_task();
      if (!seen_.insert(task->result_of()).second) {
        ++duplicated_;
        continue;
      }
      ++fresh;
      arrivals_.push_back(Arrival{task->result_of(), arrival_ns,
                                  task->outcome(),
                                  std::move(*task->mutable_payload()),
                                  std::move(*task->mutable_error())});
    }
    in_flight_ -= std::min<uint64_t>(in_flight_, fresh);
    if (fresh > 0) cv_.SignalAll();
    return fresh;
  }

  bool AllReceived() {
    MutexLock lock(&mu_);
    return seen_.size() >= count_;
  }
  uint64_t Received() {
    MutexLock lock(&mu_);
    return seen_.size();
  }
  bool Aborted() {
    MutexLock lock(&mu_);
    return !abort_reason_.empty();
  }

  // Stops producers and the consumer; the first reason wins.
  void Abort(std::string reason) {
    MutexLock lock(&mu_);
    if (abort_reason_.empty()) abort_reason_ = std::move(reason);
    cv_.SignalAll();
  }

  // Matches results to puts and checks them. Call after all threads ended.
  Report Finish(int64_t start_ns) {
    MutexLock lock(&mu_);
    Report report;
    report.tasks = count_;
    report.abort_reason = abort_reason_;
    report.duplicated = duplicated_;
    report.put_calls = put_calls_;
    report.get_calls = get_calls_;
    report.put_rtt_sum_ns = put_rtt_sum_ns_;
    report.put_rtt_max_ns = put_rtt_max_ns_;
    std::vector<bool> answered(count_, false);
    int64_t last_ns = start_ns;
    int shown = 0;
    for (const Arrival& a : arrivals_) {
      auto it = index_of_id_.find(a.result_of);
      if (it == index_of_id_.end()) {
        ++report.unexpected;
        if (shown++ < 5) LogError("result for unknown task %d", a.result_of);
        continue;
      }
      uint64_t i = it->second;
      answered[i] = true;
      last_ns = std::max(last_ns, a.arrival_ns);
      std::string expected = ExpectedResult(i);
      if (a.outcome != v1::OUTCOME_OK || a.payload != expected) {
        ++report.wrong;
        if (shown++ < 5) {
          LogError("task %d (payload %d): outcome %d, result '%s', error '%s'; expected '%s'",
                   a.result_of, i, static_cast<int>(a.outcome), a.payload,
                   a.error, expected);
        }
        continue;
      }
      report.latencies_ns.push_back(a.arrival_ns - put_ns_[i]);
    }
    for (uint64_t i = 0; i < count_; ++i) {
      if (answered[i]) continue;
      ++report.missing;
      if (shown++ < 5) {
        if (ids_[i] == 0) {
          LogError("payload %d was never put", i);
        } else {
          LogError("no result for task %d (payload %d)", ids_[i], i);
        }
      }
    }
    std::sort(report.latencies_ns.begin(), report.latencies_ns.end());
    report.seconds = static_cast<double>(last_ns - start_ns) / 1e9;
    return report;
  }

 private:
  const uint64_t count_;
  const uint64_t window_;
  Mutex mu_;
  CondVar cv_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);     // by payload index
  std::vector<int64_t> put_ns_ ABSL_GUARDED_BY(mu_);   // by payload index
  absl::flat_hash_map<uint64_t, uint64_t> index_of_id_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> seen_ ABSL_GUARDED_BY(mu_);  // result_of
  std::vector<Arrival> arrivals_ ABSL_GUARDED_BY(mu_);
  uint64_t duplicated_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t put_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t get_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t put_rtt_sum_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t put_rtt_max_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::string abort_reason_ ABSL_GUARDED_BY(mu_);
};

class Bench {
 public:
  Bench(const Options& options, Connection connection)
      : options_(options),
        token_(std::move(connection.token)),
        stub_(v1::TaskQueue::NewStub(connection.channel)) {}

  // Creates the private result queue (and the task queue, in case the
  // master does not auto-create).
  absl::Status Setup() {
    absl::BitGen gen;
    result_queue_ = absl::StrFormat("bench.results.%016x",
                                    absl::Uniform<uint64_t>(gen));
    v1::CreateQueueRequest request;
    request.mutable_config()->set_name(result_queue_);
    if (grpc::Status s = CreateQueue(request); !s.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "creating result queue ", result_queue_, ": ", DescribeStatus(s)));
    }
    request.mutable_config()->set_name(options_.queue);
    request.set_exist_ok(true);
    // ALREADY_EXISTS: it exists with other settings; it still works.
    if (grpc::Status s = CreateQueue(request);
        !s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      return absl::UnavailableError(absl::StrCat(
          "creating task queue ", options_.queue, ": ", DescribeStatus(s)));
    }
    return WaitForWorkers();
  }

  void Teardown() {
    if (result_queue_.empty()) return;
    v1::DeleteQueueRequest request;
    request.set_queue(result_queue_);
    v1::DeleteQueueResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, token_, absl::Seconds(10));
    if (grpc::Status s = stub_->DeleteQueue(&context, request, &response); !s.ok()) {
      LogWarning("deleting result queue %s: %s", result_queue_, DescribeStatus(s));
    }
  }

  // Puts `count` tasks and waits for all their results.
  Report Run(uint64_t count) {
    Phase phase(count, options_.window);
    int64_t start_ns = NowNs();
    std::vector<std::thread> threads;
    threads.emplace_back([&] { Consume(&phase); });
    for (uint64_t p = 0; p < options_.producers; ++p) {
      threads.emplace_back([&] { Produce(&phase); });
    }
    for (std::thread& t : threads) t.join();
    return phase.Finish(start_ns);
  }

 private:
  // Polls the task queue's stats until --min-workers streams serve it, so
  // that workers still connecting do not count against the run.
  absl::Status WaitForWorkers() {
    const absl::Time deadline =
        absl::Now() + absl::Seconds(static_cast<int64_t>(options_.stall_timeout_s));
    for (;;) {
      v1::GetQueueStatsRequest request;
      request.set_queue(options_.queue);
      v1::QueueStats stats;
      grpc::ClientContext context;
      PrepareContext(&context, token_, absl::Seconds(10));
      grpc::Status s = stub_->GetQueueStats(&context, request, &stats);
      if (!s.ok()) {
        return absl::UnavailableError(absl::StrCat(
            "stats of queue ", options_.queue, ": ", DescribeStatus(s)));
      }
      if (stats.workers() >= options_.min_workers) {
        if (stats.ready() + stats.leased() > 0) {
          LogWarning("queue %s already holds %d tasks; they will slow this run",
                     options_.queue, stats.ready() + stats.leased());
        }
        if (stats.workers() == 0) {
          LogWarning("no worker serves queue %s yet", options_.queue);
        }
        return absl::OkStatus();
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "only ", stats.workers(), " of ", options_.min_workers,
            " workers serve queue ", options_.queue, " after ",
            options_.stall_timeout_s, " s"));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  grpc::Status CreateQueue(const v1::CreateQueueRequest& request) {
    v1::CreateQueueResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, token_, absl::Seconds(10));
    return stub_->CreateQueue(&context, request, &response);
  }

  void Produce(Phase* phase) {
    uint64_t batch = std::min(options_.batch, options_.window);
    uint64_t begin, end;
    while (phase->ClaimBatch(batch, &begin, &end)) {
      // Build before taking window room: the encoding overlaps the wait.
      v1::PutRequest request;
      request.set_queue(options_.queue);
      request.mutable_tasks()->Reserve(static_cast<int>(end - begin));
      for (uint64_t i = begin; i < end; ++i) {
        v1::TaskSpec* task = request.add_tasks();
        task->set_payload(absl::StrCat(i));
        task->set_handler("square");
        task->set_reply_to(result_queue_);
      }
      if (!phase->AcquireWindow(end - begin)) return;
      v1::PutResponse response;
      grpc::ClientContext context;
      PrepareContext(&context, token_, absl::Seconds(60));
      int64_t sent_ns = NowNs();
      grpc::Status status = stub_->Put(&context, request, &response);
      int64_t rtt_ns = NowNs() - sent_ns;
      if (!status.ok()) {
        phase->Abort(absl::StrCat("Put of ", end - begin, " tasks failed: ",
                                  DescribeStatus(status)));
        return;
      }
      if (static_cast<uint64_t>(response.ids_size()) != end - begin) {
        phase->Abort(absl::StrCat("Put of ", end - begin, " tasks returned ",
                                  response.ids_size(), " ids"));
        return;
      }
      phase->RecordPut(begin, response, sent_ns, rtt_ns);
    }
  }

  // One long-poll for up to kMaxTasksPerGet results (take mode). The gRPC
  // deadline leaves the master time to answer "empty" itself.
  grpc::Status TakeResults(uint32_t timeout_ms, v1::GetResponse* response) {
    v1::GetRequest request;
    request.set_queue(result_queue_);
    request.set_max_tasks(kMaxTasksPerGet);
    request.set_timeout_ms(timeout_ms);
    request.set_mode(v1::GET_MODE_TAKE);
    grpc::ClientContext context;
    PrepareContext(&context, token_, absl::Milliseconds(timeout_ms) + absl::Seconds(10));
    return stub_->Get(&context, request, response);
  }

  void Consume(Phase* phase) {
    const int64_t stall_ns = static_cast<int64_t>(options_.stall_timeout_s) * 1'000'000'000;
    int64_t last_progress_ns = NowNs();
    while (!phase->AllReceived() && !phase->Aborted()) {
      v1::GetResponse response;
      grpc::Status status = TakeResults(1000, &response);
      int64_t now_ns = NowNs();
      if (status.ok()) {
        if (phase->RecordResults(&response, now_ns) > 0) last_progress_ns = now_ns;
      } else if (status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
                 status.error_code() != grpc::StatusCode::UNAVAILABLE) {
        // DEADLINE_EXCEEDED is the empty queue; UNAVAILABLE may pass.
        phase->Abort(absl::StrCat("Get on ", result_queue_, " failed: ",
                                  DescribeStatus(status)));
        return;
      }
      if (now_ns - last_progress_ns > stall_ns) {
        phase->Abort(absl::StrCat("no result for ", options_.stall_timeout_s,
                                  " s; ", phase->Received(), " received"));
        return;
      }
    }
    if (phase->Aborted()) return;
    // Every task has its result; a short last poll catches duplicates.
    v1::GetResponse response;
    if (TakeResults(200, &response).ok()) {
      phase->RecordResults(&response, NowNs());
    }
  }

  const Options& options_;
  const std::string token_;
  std::unique_ptr<v1::TaskQueue::Stub> stub_;
  std::string result_queue_;
};

// Nearest-rank percentile of sorted nanoseconds, in milliseconds.
double Percentile(const std::vector<int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
  rank = std::clamp<size_t>(rank, 1, sorted_ns.size());
  return static_cast<double>(sorted_ns[rank - 1]) / 1e6;
}

void PrintProblems(absl::string_view what, const Report& r) {
  if (!r.abort_reason.empty()) {
    std::fprintf(stderr, "%s aborted: %s\n", std::string(what).c_str(),
                 r.abort_reason.c_str());
  }
  if (r.missing + r.duplicated + r.wrong + r.unexpected > 0) {
    std::fprintf(stderr,
                 "%s FAILED: missing=%llu duplicated=%llu wrong=%llu unexpected=%llu\n",
                 std::string(what).c_str(),
                 static_cast<unsigned long long>(r.missing),
                 static_cast<unsigned long long>(r.duplicated),
                 static_cast<unsigned long long>(r.wrong),
                 static_cast<unsigned long long>(r.unexpected));
  }
}

// User + system CPU seconds this process has used so far.
double CpuSeconds() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void PrintReport(const Options& options, const Report& r) {
  double rate = r.seconds > 0 ? static_cast<double>(r.tasks) / r.seconds : 0;
  double p50 = Percentile(r.latencies_ns, 0.50), p90 = Percentile(r.latencies_ns, 0.90),
         p99 = Percentile(r.latencies_ns, 0.99), max = Percentile(r.latencies_ns, 1.0);
  double put_mean_ms =
      r.put_calls ? static_cast<double>(r.put_rtt_sum_ns) / 1e6 / static_cast<double>(r.put_calls) : 0;
  absl::PrintF("tasks:        %d (batch %d, window %d, producers %d, queue %s)\n",
               r.tasks, options.batch, options.window, options.producers, options.queue);
  absl::PrintF("wall seconds: %.3f\n", r.seconds);
  absl::PrintF("tasks/s:      %.0f\n", rate);
  absl::PrintF("latency ms (put sent -> result received): p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n",
               p50, p90, p99, max);
  absl::PrintF("rpcs:         %d Puts (round trip mean %.2f ms, max %.2f ms), %d result Gets (%.0f results each)\n",
               r.put_calls, put_mean_ms, static_cast<double>(r.put_rtt_max_ns) / 1e6,
               r.get_calls, r.get_calls ? static_cast<double>(r.tasks) / static_cast<double>(r.get_calls) : 0.0);
  absl::PrintF("bench CPU:    %.2f s (this process, warmup included)\n", CpuSeconds());
  absl::PrintF("RESULT tasks=%d seconds=%.3f tasks_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p90_ms=%.3f max_ms=%.3f ok=%d\n",
               r.tasks, r.seconds, rate, p50, p99, p90, max, r.ok() ? 1 : 0);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  InitLogging("taskq-square-bench");
  Options options;
  if (std::optional<int> exit = ParseFlags(argc, argv, &options)) return *exit;
  absl::StatusOr<Connection> connection = Connect(options.connect);
  if (!connection.ok()) {
    std::fprintf(stderr, "taskq-square-bench: %s\n",
                 std::string(connection.status().message()).c_str());
    return 1;
  }
  Bench bench(options, *std::move(connection));
  if (absl::Status s = bench.Setup(); !s.ok()) {
    std::fprintf(stderr, "taskq-square-bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  bool ok = true;
  if (options.warmup > 0) {
    Report warm = bench.Run(options.warmup);
    PrintProblems("warmup", warm);
    ok = warm.ok();
    if (ok) {
      std::fprintf(stderr, "warmup: %llu tasks in %.3f s\n",
                   static_cast<unsigned long long>(warm.tasks), warm.seconds);
    }
  }
  if (ok) {
    Report report = bench.Run(options.tasks);
    PrintReport(options, report);
    PrintProblems("run", report);
    ok = report.ok();
  }
  bench.Teardown();
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
