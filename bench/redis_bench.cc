// taskq-redis-bench: the seed's square workload on redis lists, a peer in
// bench/compare.sh. A native RESP client over one TCP socket per thread.
//
//   worker  pops tasks from PREFIX:tasks, computes "n * n = n*n", pushes
//           the results on PREFIX:results. Runs until killed, the server
//           goes away, or --seconds pass.
//   run     a producer thread LPUSHes --warmup then --tasks payloads
//           0..N-1 on PREFIX:tasks, at most --window without a result; the
//           collector pops PREFIX:results and checks each result exactly
//           once (bench/square_tally.h). Prints a RESULT line.
//
// --style one: one command per step (LPUSH one task; a worker BRPOPs one
//   task and LPUSHes its result; the collector BRPOPs one result).
// --style batched: the producer LPUSHes --batch tasks per command, a
//   worker BLMPOPs up to 64 tasks and pushes their results with one LPUSH,
//   the collector BLMPOPs up to 1000 (BLMPOP: redis >= 7.0).
// Lists are FIFO: LPUSH at the head, pop from the tail (RIGHT).
//
// Thread-safety: a program; each thread has its own connection.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_flags.h"
#include "bench/bench_report.h"
#include "bench/square_tally.h"
#include "bench/tcp_conn.h"

namespace taskq::bench {
namespace {

// A RESP reply: simple string, error, integer, bulk string, or array.
struct Reply {
  char type = 0;  // '+', '-', ':', '$', '*'
  bool null = false;
  int64_t integer = 0;
  std::string text;
  std::vector<Reply> elements;
};

class RedisConn {
 public:
  static absl::StatusOr<RedisConn> Connect(const std::string& address) {
    absl::StatusOr<TcpConn> conn = TcpConn::Connect(address);
    if (!conn.ok()) return conn.status();
    return RedisConn(*std::move(conn));
  }

  // Sends one command and reads its reply; a RESP error is a status.
  absl::StatusOr<Reply> Command(const std::vector<std::string>& args) {
    std::string out = absl::StrCat("*", args.size(), "\r\n");
    for (const std::string& arg : args) absl::StrAppend(&out, "$", arg.size(), "\r\n", arg, "\r\n");
    if (absl::Status s = conn_.WriteAll(out); !s.ok()) return s;
    absl::StatusOr<Reply> reply = ReadReply();
    if (reply.ok() && reply->type == '-') {
      return absl::InternalError(absl::StrCat("redis: ", reply->text));
    }
    return reply;
  }

 private:
  explicit RedisConn(TcpConn conn) : conn_(std::move(conn)) {}

  absl::StatusOr<Reply> ReadReply() {
    absl::StatusOr<std::string> line = conn_.ReadLine();
    if (!line.ok()) return line.status();
    if (line->empty()) return absl::DataLossError("empty RESP line");
    Reply reply;
    reply.type = (*line)[0];
    std::string rest = line->substr(1);
    switch (reply.type) {
      case '+':
      case '-':
        reply.text = std::move(rest);
        return reply;
      case ':':
      case '$':
      case '*': {
        if (!absl::SimpleAtoi(rest, &reply.integer)) {
          return absl::DataLossError(absl::StrCat("bad RESP length '", *line, "'"));
        }
        if (reply.type == ':') return reply;
        if (reply.integer < 0) {
          reply.null = true;
          return reply;
        }
        if (reply.type == '$') {
          absl::StatusOr<std::string> block = conn_.ReadBlock(static_cast<size_t>(reply.integer));
          if (!block.ok()) return block.status();
          reply.text = *std::move(block);
          return reply;
        }
        reply.elements.reserve(static_cast<size_t>(reply.integer));
        for (int64_t i = 0; i < reply.integer; ++i) {
          absl::StatusOr<Reply> element = ReadReply();
          if (!element.ok()) return element.status();
          reply.elements.push_back(*std::move(element));
        }
        return reply;
      }
      default:
        return absl::DataLossError(absl::StrCat("unknown RESP type in '", *line, "'"));
    }
  }

  TcpConn conn_;
};

struct Options {
  std::string server;
  std::string prefix = "square";
  std::string style = "batched";
  uint64_t tasks = 100000;
  uint64_t warmup = 1000;
  uint64_t batch = 500;
  uint64_t worker_batch = 64;
  uint64_t collect_batch = 1000;
  uint64_t window = 1000;
  uint64_t seconds = 600;
  uint64_t stall_timeout_s = 30;
  bool batched() const { return style == "batched"; }
};

// Pops up to `count` values from the tail of `key`, waiting up to 1 s:
// BLMPOP when count > 1, BRPOP otherwise. Empty on timeout.
absl::StatusOr<std::vector<std::string>> Pop(RedisConn& redis, const std::string& key,
                                             uint64_t count) {
  std::vector<std::string> values;
  if (count > 1) {
    absl::StatusOr<Reply> reply = redis.Command(
        {"BLMPOP", "1", "1", key, "RIGHT", "COUNT", absl::StrCat(count)});
    if (!reply.ok()) return reply.status();
    if (reply->null) return values;
    if (reply->elements.size() != 2) return absl::DataLossError("BLMPOP: not [key, values]");
    for (Reply& value : reply->elements[1].elements) values.push_back(std::move(value.text));
    return values;
  }
  absl::StatusOr<Reply> reply = redis.Command({"BRPOP", key, "1"});
  if (!reply.ok()) return reply.status();
  if (reply->null) return values;
  if (reply->elements.size() != 2) return absl::DataLossError("BRPOP: not [key, value]");
  values.push_back(std::move(reply->elements[1].text));
  return values;
}

int Worker(const Options& options) {
  absl::StatusOr<RedisConn> redis = RedisConn::Connect(options.server);
  if (!redis.ok()) {
    std::fprintf(stderr, "redis worker: %s\n", std::string(redis.status().message()).c_str());
    return 1;
  }
  const std::string tasks_key = options.prefix + ":tasks";
  const std::string results_key = options.prefix + ":results";
  const uint64_t count = options.batched() ? options.worker_batch : 1;
  const int64_t end_ns = NowNs() + static_cast<int64_t>(options.seconds) * 1'000'000'000;
  while (NowNs() < end_ns) {
    absl::StatusOr<std::vector<std::string>> tasks = Pop(*redis, tasks_key, count);
    if (!tasks.ok()) {
      std::fprintf(stderr, "redis worker: %s\n", std::string(tasks.status().message()).c_str());
      return 1;
    }
    if (tasks->empty()) continue;
    std::vector<std::string> push = {"LPUSH", results_key};
    for (const std::string& payload : *tasks) push.push_back(SquareResult(payload));
    if (absl::StatusOr<Reply> r = redis->Command(push); !r.ok()) {
      std::fprintf(stderr, "redis worker: %s\n", std::string(r.status().message()).c_str());
      return 1;
    }
  }
  return 0;
}

int Run(const Options& options) {
  const std::string tasks_key = options.prefix + ":tasks";
  const std::string results_key = options.prefix + ":results";
  const uint64_t put_batch = options.batched() ? std::min(options.batch, options.window) : 1;
  const uint64_t collect_batch = options.batched() ? options.collect_batch : 1;
  SquareSide produce = [&](SquareTally& tally) -> absl::Status {
    absl::StatusOr<RedisConn> redis = RedisConn::Connect(options.server);
    if (!redis.ok()) return redis.status();
    for (uint64_t begin = 0; begin < tally.count(); begin += put_batch) {
      uint64_t end = std::min(tally.count(), begin + put_batch);
      std::vector<std::string> push = {"LPUSH", tasks_key};
      for (uint64_t i = begin; i < end; ++i) push.push_back(absl::StrCat(i));
      if (!tally.AcquireWindow(end - begin)) return absl::OkStatus();
      tally.RecordPut(begin, end, NowNs());
      if (absl::StatusOr<Reply> r = redis->Command(push); !r.ok()) return r.status();
    }
    return absl::OkStatus();
  };
  SquareSide collect = [&](SquareTally& tally) -> absl::Status {
    absl::StatusOr<RedisConn> redis = RedisConn::Connect(options.server);
    if (!redis.ok()) return redis.status();
    StallWatch stall(options.stall_timeout_s);
    while (!tally.Done()) {
      absl::StatusOr<std::vector<std::string>> results = Pop(*redis, results_key, collect_batch);
      if (!results.ok()) return results.status();
      int64_t now_ns = NowNs();
      if (!results->empty()) tally.RecordResults(*results, now_ns);
      if (absl::Status s = stall.Check(!results->empty(), now_ns); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  return RunSquarePhases(options.warmup, options.tasks, options.window, produce, collect) ? 0 : 1;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"The square workload on redis lists (a bench/compare.sh peer).",
               "taskq-redis-bench"};
  app.require_subcommand(1);
  CLI::App* worker = app.add_subcommand("worker", "compute results until killed");
  CLI::App* run = app.add_subcommand("run", "put the tasks and check every result");
  for (CLI::App* mode : {worker, run}) {
    AddText(*mode, "--server", &options.server, "redis, HOST:PORT")->required();
    AddText(*mode, "--prefix", &options.prefix, "key prefix: PREFIX:tasks, PREFIX:results");
    AddText(*mode, "--style", &options.style, "one (command per step) or batched")
        ->check(CLI::IsMember({"one", "batched"}));
  }
  AddCount<uint64_t>(*worker, "--seconds", &options.seconds, "exit after this long", 1, 86400);
  AddCount<uint64_t>(*worker, "--worker-batch", &options.worker_batch,
                     "batched: most tasks per BLMPOP", 2, 100000);
  AddCount<uint64_t>(*run, "--tasks", &options.tasks, "tasks measured", 1, uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--warmup", &options.warmup, "tasks run first, not measured", 0,
                     uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--batch", &options.batch, "batched: tasks per LPUSH", 1, 100000);
  AddCount<uint64_t>(*run, "--collect-batch", &options.collect_batch,
                     "batched: most results per BLMPOP", 2, 100000);
  AddCount<uint64_t>(*run, "--window", &options.window, "most tasks without a result", 1,
                     uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--stall-timeout", &options.stall_timeout_s,
                     "give up after this long without a result", 1, 3600);
  if (std::optional<int> exit = Parse(app, argc, argv)) return *exit;
  return worker->parsed() ? Worker(options) : Run(options);
}

}  // namespace
}  // namespace taskq::bench

int main(int argc, char** argv) { return taskq::bench::Main(argc, argv); }
