// taskq-cluster-square-bench: the square workload (bench/README.md) over
// several queues spread over one or more masters, for the cluster scaling
// figure (bench/cluster_scaling.sh, docs/CLUSTER.md#scaling).
//
// Queue k (0..Q-1) is PREFIX.k and lives on master k mod M, with its result
// queue PREFIX.k.results on the same master (a task's reply_to must be on
// its queue's master). Both are created on their master with
// CreateQueueRequest.on = its name (when --master gave NAME=ADDRESS), and
// each lane talks to its own master directly: what a client that learnt
// the map does. Each queue gets N/Q tasks from its own producer, at most
// --window of them in flight, and its own collector checks every result
// (bench/square_tally.h). Prints tasks/s per master and overall, and the
// RESULT line; exit 1 unless every task had exactly one right result.
//
// Thread-safety: a program, not a library; each lane's threads share only
// its SquareTally (thread-safe).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "bench/bench_flags.h"
#include "bench/bench_report.h"
#include "bench/square_tally.h"
#include "common/channel.h"
#include "common/limits.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {
namespace {

namespace v1 = ::taskq::v1;

struct Options {
  ConnectOptions connect;
  std::vector<std::string> masters;  // NAME=HOST:PORT or HOST:PORT
  uint64_t queues = 12;
  std::string prefix = "sq";
  uint64_t tasks = 24000;
  uint64_t warmup = 1200;
  uint64_t batch = 100;
  uint64_t window = 200;
  uint64_t stall_timeout_s = 30;
  uint64_t min_workers = 0;
  bool setup_only = false;
};

std::optional<int> ParseFlags(int argc, char** argv, Options* options) {
  CLI::App app{
      "Puts N `square` tasks spread over Q queues, queue k on master k mod M (created there "
      "with `on`), and checks every result. Needs running masters and workers serving the "
      "queues (see bench/cluster_scaling.sh).",
      "taskq-cluster-square-bench"};
  app.add_option("--master", options->masters,
                 "a master, NAME=HOST:PORT (its queues are created with on=NAME) or HOST:PORT "
                 "(repeatable, in order)")
      ->required();
  app.add_option("--token-file", options->connect.token_file, "file holding the bearer token");
  app.add_flag("--tls", options->connect.tls, "connect with TLS");
  app.add_option("--tls-ca", options->connect.tls_ca_file, "CA certificate (PEM)");
  bench::AddCount<uint64_t>(app, "--queues", &options->queues, "task queues", 1, 1000);
  bench::AddText(app, "--prefix", &options->prefix, "queue names: PREFIX.k, PREFIX.k.results");
  bench::AddCount<uint64_t>(app, "--tasks", &options->tasks, "tasks measured (all queues)", 1,
                            uint64_t{1} << 32);
  bench::AddCount<uint64_t>(app, "--warmup", &options->warmup,
                            "tasks run and checked before measuring (all queues)", 0,
                            uint64_t{1} << 32);
  bench::AddBatchFlag(app, &options->batch);
  bench::AddCount<uint64_t>(app, "--window", &options->window,
                            "most tasks in flight per queue (put, no result yet)", 1,
                            uint64_t{1} << 32);
  bench::AddStallTimeoutFlag(app, &options->stall_timeout_s);
  bench::AddCount<uint64_t>(app, "--min-workers", &options->min_workers,
                            "first wait until this many Work streams serve each queue", 0,
                            100000);
  app.add_flag("--setup-only", options->setup_only,
               "create the queues on their masters and exit (before workers name them)");
  return bench::Parse(app, argc, argv);
}

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", static_cast<int>(s.error_code()), ": ", s.error_message());
}

struct Master {
  std::string name;  // "" when given as HOST:PORT
  std::string address;
  std::string token;
  std::unique_ptr<v1::TaskQueue::Stub> stub;
};

// One queue, its result queue and its master.
struct Lane {
  Master* master = nullptr;
  std::string queue;
  std::string results;
};

class Bench {
 public:
  explicit Bench(const Options& options) : options_(options) {}

  absl::Status Connect() {
    for (const std::string& spec : options_.masters) {
      auto m = std::make_unique<Master>();
      std::vector<std::string> parts = absl::StrSplit(spec, absl::MaxSplits('=', 1));
      if (parts.size() == 2) {
        m->name = parts[0];
        m->address = parts[1];
      } else {
        m->address = spec;
      }
      ConnectOptions connect = options_.connect;
      connect.master = m->address;
      absl::StatusOr<Connection> c = ::taskq::Connect(connect);
      if (!c.ok()) return c.status();
      m->token = std::move(c->token);
      m->stub = v1::TaskQueue::NewStub(c->channel);
      masters_.push_back(std::move(m));
    }
    for (uint64_t k = 0; k < options_.queues; ++k) {
      Lane lane;
      lane.master = masters_[k % masters_.size()].get();
      lane.queue = absl::StrCat(options_.prefix, ".", k);
      lane.results = absl::StrCat(lane.queue, ".results");
      lanes_.push_back(std::move(lane));
    }
    return absl::OkStatus();
  }

  // Creates each lane's queues on its master, then waits for the workers.
  absl::Status Setup() {
    if (absl::Status s = CreateQueues(); !s.ok() || options_.setup_only) return s;
    return WaitForWorkers();
  }

 private:
  absl::Status CreateQueues() {
    for (const Lane& lane : lanes_) {
      for (const std::string& name : {lane.queue, lane.results}) {
        v1::CreateQueueRequest request;
        request.mutable_config()->set_name(name);
        request.set_exist_ok(true);
        request.set_on(lane.master->name);
        v1::CreateQueueResponse response;
        grpc::ClientContext context;
        PrepareContext(&context, lane.master->token, absl::Seconds(10));
        grpc::Status s = lane.master->stub->CreateQueue(&context, request, &response);
        if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
          return absl::UnavailableError(
              absl::StrCat("creating ", name, " on ", lane.master->address, ": ", Describe(s)));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status WaitForWorkers() {
    const absl::Time deadline =
        absl::Now() + absl::Seconds(static_cast<int64_t>(options_.stall_timeout_s));
    for (const Lane& lane : lanes_) {
      for (;;) {
        v1::GetQueueStatsRequest request;
        request.set_queue(lane.queue);
        v1::QueueStats stats;
        grpc::ClientContext context;
        PrepareContext(&context, lane.master->token, absl::Seconds(10));
        grpc::Status s = lane.master->stub->GetQueueStats(&context, request, &stats);
        if (!s.ok()) return absl::UnavailableError(absl::StrCat(lane.queue, ": ", Describe(s)));
        if (stats.workers() >= options_.min_workers) break;
        if (absl::Now() > deadline) {
          return absl::DeadlineExceededError(absl::StrCat("only ", stats.workers(), " of ",
                                                          options_.min_workers,
                                                          " workers serve ", lane.queue));
        }
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    return absl::OkStatus();
  }

 public:
  // Runs `total` tasks over the lanes; prints the report when `measured`.
  bool Run(uint64_t total, bool measured) {
    const size_t n = lanes_.size();
    std::vector<std::unique_ptr<bench::SquareTally>> tallies;
    for (size_t k = 0; k < n; ++k) {
      uint64_t count = total / n + (k < total % n ? 1 : 0);
      tallies.push_back(std::make_unique<bench::SquareTally>(std::max<uint64_t>(count, 1),
                                                             options_.window));
    }
    const int64_t start_ns = bench::NowNs();
    std::vector<std::thread> threads;
    for (size_t k = 0; k < n; ++k) {
      threads.emplace_back([this, k, &tallies] { Side(k, *tallies[k], true); });
      threads.emplace_back([this, k, &tallies] { Side(k, *tallies[k], false); });
    }
    for (std::thread& t : threads) t.join();
    bool ok = true;
    int64_t last_ns = start_ns;
    std::map<Master*, std::pair<uint64_t, int64_t>> per_master;  // tasks, last arrival
    std::vector<int64_t> latencies;
    for (size_t k = 0; k < n; ++k) {
      ok = tallies[k]->Check(absl::StrCat(measured ? "run " : "warmup ", lanes_[k].queue).c_str()) && ok;
      last_ns = std::max(last_ns, tallies[k]->last_ns());
      auto& [tasks, last] = per_master[lanes_[k].master];
      tasks += tallies[k]->count();
      last = std::max(last, tallies[k]->last_ns());
      std::vector<int64_t> l = tallies[k]->TakeLatencies();
      latencies.insert(latencies.end(), l.begin(), l.end());
    }
    if (!measured) return ok;
    for (const auto& m : masters_) {
      auto [tasks, last] = per_master[m.get()];
      double s = static_cast<double>(last - start_ns) / 1e9;
      absl::PrintF("master %-10s %-22s %8d tasks  %8.0f tasks/s\n",
                   m->name.empty() ? "-" : m->name, m->address, tasks,
                   s > 0 ? static_cast<double>(tasks) / s : 0.0);
    }
    uint64_t all = 0;
    for (auto& t : tallies) all += t->count();
    const double seconds = static_cast<double>(last_ns - start_ns) / 1e9;
    absl::PrintF("queues %d over %d master(s), window %d per queue, batch %d\n",
                 lanes_.size(), masters_.size(), options_.window, options_.batch);
    bench::PrintResult(all, seconds, latencies, ok);
    return ok;
  }

  void Teardown() {
    for (const Lane& lane : lanes_) {
      v1::DeleteQueueRequest request;
      request.set_queue(lane.results);
      v1::DeleteQueueResponse response;
      grpc::ClientContext context;
      PrepareContext(&context, lane.master->token, absl::Seconds(10));
      lane.master->stub->DeleteQueue(&context, request, &response);
    }
  }

 private:
  // The producer (`produce`) or collector of lane k; an error aborts it.
  void Side(size_t k, bench::SquareTally& tally, bool produce) {
    absl::Status s = produce ? Produce(lanes_[k], tally) : Collect(lanes_[k], tally);
    if (!s.ok()) tally.Abort(std::string(s.message()));
  }

  absl::Status Produce(const Lane& lane, bench::SquareTally& tally) {
    const uint64_t batch = std::min(options_.batch, options_.window);
    for (uint64_t begin = 0; begin < tally.count(); begin += batch) {
      const uint64_t end = std::min(tally.count(), begin + batch);
      v1::PutRequest request;
      request.set_queue(lane.queue);
      for (uint64_t i = begin; i < end; ++i) {
        v1::TaskSpec* task = request.add_tasks();
        task->set_payload(absl::StrCat(i));
        task->set_handler("square");
        task->set_reply_to(lane.results);
      }
      if (!tally.AcquireWindow(end - begin)) return absl::OkStatus();  // aborted
      v1::PutResponse response;
      grpc::ClientContext context;
      PrepareContext(&context, lane.master->token, absl::Seconds(60));
      const int64_t sent_ns = bench::NowNs();
      grpc::Status s = lane.master->stub->Put(&context, request, &response);
      if (!s.ok()) return absl::UnavailableError(absl::StrCat("Put on ", lane.queue, ": ", Describe(s)));
      tally.RecordPut(begin, end, sent_ns);
    }
    return absl::OkStatus();
  }

  absl::Status Collect(const Lane& lane, bench::SquareTally& tally) {
    bench::StallWatch stall(options_.stall_timeout_s);
    while (!tally.Done()) {
      v1::GetRequest request;
      request.set_queue(lane.results);
      request.set_max_tasks(kMaxTasksPerGet);
      request.set_timeout_ms(1000);
      request.set_mode(v1::GET_MODE_TAKE);
      v1::GetResponse response;
      grpc::ClientContext context;
      PrepareContext(&context, lane.master->token, absl::Seconds(11));
      grpc::Status s = lane.master->stub->Get(&context, request, &response);
      const int64_t now_ns = bench::NowNs();
      std::vector<std::string> results;
      if (s.ok()) {
        for (v1::Delivery& d : *response.mutable_deliveries()) {
          results.push_back(std::move(*d.mutable_task()->mutable_payload()));
        }
        tally.RecordResults(results, now_ns);
      } else if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
                 s.error_code() != grpc::StatusCode::UNAVAILABLE) {
        return absl::UnavailableError(absl::StrCat("Get on ", lane.results, ": ", Describe(s)));
      }
      if (absl::Status st = stall.Check(!results.empty(), now_ns); !st.ok()) {
        return absl::DeadlineExceededError(absl::StrCat(lane.queue, ": ", st.message()));
      }
    }
    return absl::OkStatus();
  }

  const Options& options_;
  std::vector<std::unique_ptr<Master>> masters_;
  std::vector<Lane> lanes_;
};

int Main(int argc, char** argv) {
  Options options;
  if (std::optional<int> exit = ParseFlags(argc, argv, &options)) return *exit;
  Bench bench(options);
  absl::Status s = bench.Connect();
  if (s.ok()) s = bench.Setup();
  if (!s.ok()) {
    std::fprintf(stderr, "taskq-cluster-square-bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  if (options.setup_only) return 0;
  bool ok = options.warmup == 0 || bench.Run(options.warmup, false);
  if (ok) {
    // Markers for a driver sampling the masters' CPU over the measured run.
    std::printf("measuring\n");
    std::fflush(stdout);
    ok = bench.Run(options.tasks, true);
  }
  bench.Teardown();
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
