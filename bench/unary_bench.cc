// taskq-unary-bench: what a Python-queue user driving taskq one item at a
// time pays: one Put of one task, then one Get (take mode) of it, through
// the client library (common/client.h), one pair at a time on one queue
// with no workers. bench/compare.sh sets it beside two raw unary gRPC
// calls (taskq-echo-bench unary).
//
// Runs --warmup pairs, then --pairs pairs or until --seconds pass (whichever
// comes first: with --fsync always each Put waits for a disk flush), checks
// each Get returns the task just put, and prints a RESULT line (bench_report.h;
// "tasks" = pairs, latency = one pair).
//
// Thread-safety: a program with one thread.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/bench_flags.h"
#include "bench/bench_report.h"
#include "common/client.h"
#include "common/limits.h"
#include "common/log.h"

namespace taskq::bench {
namespace {

struct Options {
  ConnectOptions connect;
  std::string queue = "bench.unary";
  uint64_t pairs = 20000;
  uint64_t warmup = 200;
  uint64_t seconds = 30;
};

// One Put then one Get of payload `i`; false (after a message) on error.
bool Pair(Client& client, const std::string& queue, uint64_t i) {
  v1::TaskSpec spec;
  spec.set_payload(absl::StrCat(i));
  absl::StatusOr<std::vector<uint64_t>> ids = client.Put(queue, {spec});
  if (!ids.ok() || ids->size() != 1) {
    std::fprintf(stderr, "put %llu: %s\n", static_cast<unsigned long long>(i),
                 ids.status().ToString().c_str());
    return false;
  }
  absl::StatusOr<std::vector<v1::Delivery>> got =
      client.Get(queue, {.max_tasks = 1, .timeout = absl::Seconds(10)});
  if (!got.ok() || got->size() != 1 || (*got)[0].task().id() != (*ids)[0] ||
      (*got)[0].task().payload() != spec.payload()) {
    std::fprintf(stderr, "get %llu: %s\n", static_cast<unsigned long long>(i),
                 got.ok() ? "not the task just put" : got.status().ToString().c_str());
    return false;
  }
  return true;
}

int Main(int argc, char** argv) {
  InitLogging("taskq-unary-bench");
  Options options;
  CLI::App app{"taskq's unary path: one Put + one Get per item, one at a time.",
               "taskq-unary-bench"};
  AddConnectFlags(app, &options.connect);
  AddText(app, "--queue", &options.queue, "queue to use (no worker may serve it)");
  AddCount<uint64_t>(app, "--pairs", &options.pairs, "Put+Get pairs measured", 1,
                     uint64_t{1} << 32);
  AddCount<uint64_t>(app, "--warmup", &options.warmup, "pairs run first, not measured", 0,
                     1000000);
  AddCount<uint64_t>(app, "--seconds", &options.seconds, "stop measuring after this long", 1,
                     3600);
  if (std::optional<int> exit = Parse(app, argc, argv)) return *exit;
  if (absl::Status s = ValidateName("queue", options.queue); !s.ok()) {
    std::fprintf(stderr, "taskq-unary-bench: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "taskq-unary-bench: %s\n", client.status().ToString().c_str());
    return 1;
  }
  v1::QueueConfig config;
  config.set_name(options.queue);
  if (auto created = (*client)->CreateQueue(config, /*exist_ok=*/true); !created.ok()) {
    std::fprintf(stderr, "taskq-unary-bench: creating %s: %s\n", options.queue.c_str(),
                 created.status().ToString().c_str());
    return 1;
  }
  for (uint64_t i = 0; i < options.warmup; ++i) {
    if (!Pair(**client, options.queue, i)) return 1;
  }
  std::vector<int64_t> latencies;
  latencies.reserve(options.pairs);
  const int64_t start_ns = NowNs();
  const int64_t end_ns = start_ns + static_cast<int64_t>(options.seconds) * 1'000'000'000;
  int64_t now_ns = start_ns;
  for (uint64_t i = 0; i < options.pairs && now_ns < end_ns; ++i) {
    if (!Pair(**client, options.queue, i)) return 1;
    int64_t done_ns = NowNs();
    latencies.push_back(done_ns - now_ns);
    now_ns = done_ns;
  }
  PrintResult(latencies.size(), static_cast<double>(now_ns - start_ns) / 1e9, latencies, true);
  return 0;
}

}  // namespace
}  // namespace taskq::bench

int main(int argc, char** argv) { return taskq::bench::Main(argc, argv); }
