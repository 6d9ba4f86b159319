// taskq-beanstalk-bench: the seed's square workload on beanstalkd, a peer
// in bench/compare.sh. A native client of beanstalkd's text protocol over
// one TCP socket per thread, one command per step (beanstalkd has no batch
// put or reserve):
//
//   worker  watches tube PREFIX-tasks; reserve-with-timeout 1, compute
//           "n * n = n*n", put the result on tube PREFIX-results, delete
//           the task. Runs until killed, the server goes away, or --seconds.
//   run     a producer thread puts --warmup then --tasks payloads 0..N-1 on
//           PREFIX-tasks, at most --window without a result; the collector
//           reserves and deletes each result on PREFIX-results and checks
//           it exactly once (bench/square_tally.h). Prints a RESULT line.
//
// Thread-safety: a program; each thread has its own connection.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_flags.h"
#include "bench/bench_report.h"
#include "bench/square_tally.h"
#include "bench/tcp_conn.h"

namespace taskq::bench {
namespace {

// A reserved job.
struct Job {
  uint64_t id = 0;
  std::string body;
};

class BeanstalkConn {
 public:
  static absl::StatusOr<BeanstalkConn> Connect(const std::string& address) {
    absl::StatusOr<TcpConn> conn = TcpConn::Connect(address);
    if (!conn.ok()) return conn.status();
    return BeanstalkConn(*std::move(conn));
  }

  // Puts on the tube `use`d last.
  absl::Status Put(const std::string& body) {
    return Expect(absl::StrCat("put 1024 0 60 ", body.size(), "\r\n", body, "\r\n"), "INSERTED ");
  }
  absl::Status Use(const std::string& tube) { return Expect("use " + tube + "\r\n", "USING "); }
  // Watches only `tube`.
  absl::Status WatchOnly(const std::string& tube) {
    if (absl::Status s = Expect("watch " + tube + "\r\n", "WATCHING "); !s.ok()) return s;
    return Expect("ignore default\r\n", "WATCHING ");
  }
  absl::Status Delete(uint64_t id) { return Expect(absl::StrCat("delete ", id, "\r\n"), "DELETED"); }

  // A job from the watched tubes, or nothing after `timeout_s`.
  absl::StatusOr<std::optional<Job>> Reserve(int timeout_s) {
    if (absl::Status s = conn_.WriteAll(absl::StrCat("reserve-with-timeout ", timeout_s, "\r\n"));
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::string> line = conn_.ReadLine();
    if (!line.ok()) return line.status();
    if (*line == "TIMED_OUT" || *line == "DEADLINE_SOON") return std::optional<Job>();
    std::vector<std::string> words = absl::StrSplit(*line, ' ');
    Job job;
    size_t bytes = 0;
    if (words.size() != 3 || words[0] != "RESERVED" || !absl::SimpleAtoi(words[1], &job.id) ||
        !absl::SimpleAtoi(words[2], &bytes)) {
      return absl::InternalError(absl::StrCat("beanstalkd: reserve: '", *line, "'"));
    }
    absl::StatusOr<std::string> body = conn_.ReadBlock(bytes);
    if (!body.ok()) return body.status();
    job.body = *std::move(body);
    return std::optional<Job>(std::move(job));
  }

 private:
  explicit BeanstalkConn(TcpConn conn) : conn_(std::move(conn)) {}

  // Sends `command`; the reply line must start with `want`.
  absl::Status Expect(const std::string& command, absl::string_view want) {
    if (absl::Status s = conn_.WriteAll(command); !s.ok()) return s;
    absl::StatusOr<std::string> line = conn_.ReadLine();
    if (!line.ok()) return line.status();
    if (!absl::StartsWith(*line, want)) {
      return absl::InternalError(absl::StrCat("beanstalkd: '", command.substr(0, command.find('\r')),
                                              "' answered '", *line, "'"));
    }
    return absl::OkStatus();
  }

  TcpConn conn_;
};

struct Options {
  std::string server;
  std::string prefix = "square";
  uint64_t tasks = 100000;
  uint64_t warmup = 1000;
  uint64_t window = 1000;
  uint64_t seconds = 600;
  uint64_t stall_timeout_s = 30;
};

absl::Status RunWorker(const Options& options) {
  absl::StatusOr<BeanstalkConn> bean = BeanstalkConn::Connect(options.server);
  if (!bean.ok()) return bean.status();
  if (absl::Status s = bean->Use(options.prefix + "-results"); !s.ok()) return s;
  if (absl::Status s = bean->WatchOnly(options.prefix + "-tasks"); !s.ok()) return s;
  const int64_t end_ns = NowNs() + static_cast<int64_t>(options.seconds) * 1'000'000'000;
  while (NowNs() < end_ns) {
    absl::StatusOr<std::optional<Job>> job = bean->Reserve(1);
    if (!job.ok()) return job.status();
    if (!job->has_value()) continue;
    if (absl::Status s = bean->Put(SquareResult((*job)->body)); !s.ok()) return s;
    if (absl::Status s = bean->Delete((*job)->id); !s.ok()) return s;
  }
  return absl::OkStatus();
}

int Run(const Options& options) {
  SquareSide produce = [&](SquareTally& tally) -> absl::Status {
    absl::StatusOr<BeanstalkConn> bean = BeanstalkConn::Connect(options.server);
    if (!bean.ok()) return bean.status();
    if (absl::Status s = bean->Use(options.prefix + "-tasks"); !s.ok()) return s;
    for (uint64_t i = 0; i < tally.count(); ++i) {
      if (!tally.AcquireWindow(1)) return absl::OkStatus();
      tally.RecordPut(i, i + 1, NowNs());
      if (absl::Status s = bean->Put(absl::StrCat(i)); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  SquareSide collect = [&](SquareTally& tally) -> absl::Status {
    absl::StatusOr<BeanstalkConn> bean = BeanstalkConn::Connect(options.server);
    if (!bean.ok()) return bean.status();
    if (absl::Status s = bean->WatchOnly(options.prefix + "-results"); !s.ok()) return s;
    StallWatch stall(options.stall_timeout_s);
    while (!tally.Done()) {
      absl::StatusOr<std::optional<Job>> job = bean->Reserve(1);
      if (!job.ok()) return job.status();
      int64_t now_ns = NowNs();
      if (job->has_value()) {
        if (absl::Status s = bean->Delete((*job)->id); !s.ok()) return s;
        tally.RecordResults({std::move((*job)->body)}, now_ns);
      }
      if (absl::Status s = stall.Check(job->has_value(), now_ns); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  return RunSquarePhases(options.warmup, options.tasks, options.window, produce, collect) ? 0 : 1;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"The square workload on beanstalkd (a bench/compare.sh peer).",
               "taskq-beanstalk-bench"};
  app.require_subcommand(1);
  CLI::App* worker = app.add_subcommand("worker", "compute results until killed");
  CLI::App* run = app.add_subcommand("run", "put the tasks and check every result");
  for (CLI::App* mode : {worker, run}) {
    AddText(*mode, "--server", &options.server, "beanstalkd, HOST:PORT")->required();
    AddText(*mode, "--prefix", &options.prefix, "tube prefix: PREFIX-tasks, PREFIX-results");
  }
  AddCount<uint64_t>(*worker, "--seconds", &options.seconds, "exit after this long", 1, 86400);
  AddCount<uint64_t>(*run, "--tasks", &options.tasks, "tasks measured", 1, uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--warmup", &options.warmup, "tasks run first, not measured", 0,
                     uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--window", &options.window, "most tasks without a result", 1,
                     uint64_t{1} << 32);
  AddCount<uint64_t>(*run, "--stall-timeout", &options.stall_timeout_s,
                     "give up after this long without a result", 1, 3600);
  if (std::optional<int> exit = Parse(app, argc, argv)) return *exit;
  if (worker->parsed()) {
    if (absl::Status s = RunWorker(options); !s.ok()) {
      std::fprintf(stderr, "beanstalk worker: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    return 0;
  }
  return Run(options);
}

}  // namespace
}  // namespace taskq::bench

int main(int argc, char** argv) { return taskq::bench::Main(argc, argv); }
