// taskq-backlog-bench: the measuring half of bench/backlog.sh, which asks
// what a large backlog costs a durable master: how fast it takes N tasks,
// and, after kill -9, how long it takes to serve them again.
//
//   fill   puts N tasks of B-byte payloads on one queue from K concurrent
//          Put streams (one unary Put of --batch tasks in flight per
//          stream); reports the put rate and the Put round trips.
//   start  starts a master (the command after --) and times, from just
//          before the exec: its "store: recovered" log line (when it was
//          seen, and the time stamped on it), its port file, and with
//          --probe-queue the first Get (lease mode, nowait, 1 task) that
//          returns a task, i.e. "serving again". The probe's lease is
//          released at once, so the task stays queued. The master is left
//          running (the caller stops it, by the pid in --pid-file).
//   drain  takes tasks off the queue with K concurrent Gets (take mode,
//          1000 per call) until N are taken or it is empty; reports the rate.
//
// Each mode ends with one "RESULT <mode> key=value ..." line for scripts.
//
// Thread-safety: a program, not a library. State shared between the
// threads of a mode lives in a struct guarded by its mutex, or is atomic.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_flags.h"
#include "common/client.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/sync.h"

extern char** environ;

namespace taskq {
namespace {

struct Options {
  std::string mode;
  ConnectOptions connect;
  std::string queue = "backlog";
  uint64_t tasks = 1000000;
  bool tasks_set = false;
  uint64_t bytes = 100;
  uint64_t batch = 1000;
  uint64_t streams = 0;  // 0 = the mode's default
  uint64_t timeout_s = 0;  // 0 = the mode's default
  std::string port_file, log_file, pid_file, probe_queue;
  std::vector<std::string> command;  // start: the master's argv
};

// Fills `options` from argv; the exit status when the program must stop.
std::optional<int> ParseFlags(int argc, char** argv, Options* options) {
  CLI::App app{"The measuring half of bench/backlog.sh: what a large backlog costs a "
               "durable master.",
               "taskq-backlog-bench"};
  app.require_subcommand(1);
  CLI::App* fill = app.add_subcommand(
      "fill", "put --tasks tasks of --bytes random bytes on --queue, --batch tasks per Put, "
              "--streams Puts in flight");
  CLI::App* start = app.add_subcommand(
      "start", "spawn the master (the command after --) with stdout and stderr appended to "
               "--log-file, write its pid to --pid-file, and time its recovery log line, its "
               "port file (which must name the same file as its --port-file) and, with "
               "--probe-queue, the first Get that returns a task. Leaves it running.");
  CLI::App* drain = app.add_subcommand(
      "drain", "take up to --tasks tasks (default: all ready) off --queue with --streams "
               "concurrent Gets of up to 1000");
  for (CLI::App* mode : {fill, drain}) {
    bench::AddConnectFlags(*mode, &options->connect);
    mode->get_option("--master")->required();
    mode->get_option("--token-file")->required();
    bench::AddQueueFlag(*mode, &options->queue, "the queue");
    mode->add_option("--streams", options->streams,
                     mode == fill ? "Puts in flight (default 4)" : "Gets in flight (default 2)")
        ->check(CLI::Range(1, 64));
  }
  bench::AddCount<uint64_t>(*fill, "--tasks", &options->tasks, "tasks to put", 1,
                            uint64_t{1} << 32);
  CLI::Option* drain_tasks = drain->add_option("--tasks", options->tasks, "most tasks to take")
                                 ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  bench::AddCount<uint64_t>(*fill, "--bytes", &options->bytes, "payload bytes per task", 0,
                            1 << 20);
  bench::AddBatchFlag(*fill, &options->batch);
  start->add_option("--token-file", options->connect.token_file,
                    "the master's token file (for --probe-queue)");
  start->add_option("--port-file", options->port_file, "the master's port file")->required();
  start->add_option("--log-file", options->log_file, "append the master's output here")
      ->required();
  start->add_option("--pid-file", options->pid_file, "write the master's pid here")
      ->required();
  start->add_option("--probe-queue", options->probe_queue,
                    "time the first Get that returns a task from this queue")
      ->needs(start->get_option("--token-file"));
  start->add_option("command", options->command, "-- MASTER_BINARY ARGS...")->required();
  for (CLI::App* mode : {fill, start, drain}) {
    mode->add_option("--timeout", options->timeout_s,
                     mode == start ? "give up after this many seconds (default 120)"
                                   : "give up after this many seconds (default 600)")
        ->check(CLI::Range(1, 86400));
  }
  if (std::optional<int> exit = bench::Parse(app, argc, argv)) return exit;
  options->mode = fill->parsed() ? "fill" : start->parsed() ? "start" : "drain";
  options->tasks_set = fill->parsed() || drain_tasks->count() > 0;
  if (options->streams == 0) options->streams = options->mode == "fill" ? 4 : 2;
  if (options->timeout_s == 0) options->timeout_s = options->mode == "start" ? 120 : 600;
  return std::nullopt;
}

using SteadyClock = std::chrono::steady_clock;

double MsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

// Nearest-rank percentile of sorted values.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

std::string Describe(const absl::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
}

// Cancels the calls of `canceller` once `deadline` passes, unless Stop()
// ran first; meanwhile calls `tick` every `tick_every` (progress lines).
class Watchdog {
 public:
  Watchdog(absl::Time deadline, CallCanceller* canceller, absl::Duration tick_every,
           std::function<void()> tick)
      : thread_([this, deadline, canceller, tick_every, tick = std::move(tick)] {
          MutexLock lock(&mu_);
          while (!stopped_) {
            absl::Time wake = std::min(deadline, absl::Now() + tick_every);
            cv_.WaitWithDeadline(&mu_, wake);
            if (stopped_) break;
            if (absl::Now() >= deadline) {
              fired_ = true;
              canceller->Cancel();
              break;
            }
            if (tick) tick();
          }
        }) {}
  ~Watchdog() { Stop(); }

  void Stop() {
    {
      MutexLock lock(&mu_);
      stopped_ = true;
      cv_.SignalAll();
    }
    if (thread_.joinable()) thread_.join();
  }
  bool fired() {
    MutexLock lock(&mu_);
    return fired_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the fields above exist
};

absl::StatusOr<std::unique_ptr<Client>> ConnectClient(const ConnectOptions& connect) {
  ClientOptions client_options;
  client_options.call_timeout = absl::Seconds(30);
  return Client::Connect(connect, client_options);
}

// ---- fill ------------------------------------------------------------------

// What the fill streams share.
struct FillState {
  std::atomic<uint64_t> next{0};  // next payload index to claim
  std::atomic<uint64_t> stored{0};
  Mutex mu;
  std::vector<double> rtt_ms ABSL_GUARDED_BY(mu);
  absl::Status error ABSL_GUARDED_BY(mu);
};

// A task payload of `bytes` pseudo-random bytes (xorshift: cheap, and no
// two tasks alike, so nothing downstream can share or compress them).
std::string RandomPayload(uint64_t bytes, uint64_t* state) {
  std::string payload(bytes, '\0');
  for (size_t i = 0; i < payload.size(); i += 8) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    std::memcpy(payload.data() + i, &x, std::min<size_t>(8, payload.size() - i));
  }
  return payload;
}

int Fill(const Options& options) {
  auto client = ConnectClient(options.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "fill: %s\n", Describe(client.status()).c_str());
    return 1;
  }
  v1::QueueConfig config;
  config.set_name(options.queue);
  if (auto created = (*client)->CreateQueue(config, /*exist_ok=*/true); !created.ok()) {
    std::fprintf(stderr, "fill: creating queue %s: %s\n", options.queue.c_str(),
                 Describe(created.status()).c_str());
    return 1;
  }
  uint64_t ready_before = 0;
  if (auto stats = (*client)->Stats(options.queue); stats.ok()) ready_before = stats->ready();

  FillState state;
  CallCanceller canceller;
  const auto start = SteadyClock::now();
  Watchdog watchdog(absl::Now() + absl::Seconds(static_cast<int64_t>(options.timeout_s)),
                    &canceller, absl::Seconds(5), [&] {
                      uint64_t stored = state.stored.load();
                      std::fprintf(stderr, "fill: %llu/%llu tasks stored, %.0f tasks/s\n",
                                   static_cast<unsigned long long>(stored),
                                   static_cast<unsigned long long>(options.tasks),
                                   static_cast<double>(stored) / (MsSince(start) / 1000));
                    });
  std::vector<std::thread> streams;
  for (uint64_t k = 0; k < options.streams; ++k) {
    streams.emplace_back([&, k] {
      uint64_t rng = 0x9e3779b97f4a7c15ULL * (k + 1);
      PutOptions put_options;
      put_options.max_batch = options.batch;
      put_options.timeout = absl::Seconds(60);
      put_options.canceller = &canceller;
      for (;;) {
        uint64_t begin = state.next.fetch_add(options.batch);
        if (begin >= options.tasks) return;
        uint64_t end = std::min(options.tasks, begin + options.batch);
        std::vector<v1::TaskSpec> specs(end - begin);
        for (v1::TaskSpec& spec : specs) spec.set_payload(RandomPayload(options.bytes, &rng));
        const auto sent = SteadyClock::now();
        auto ids = (*client)->Put(options.queue, std::move(specs), put_options);
        double rtt = MsSince(sent);
        MutexLock lock(&state.mu);
        if (!ids.ok()) {
          if (state.error.ok()) state.error = ids.status();
          canceller.Cancel();  // stops the other streams too
          return;
        }
        state.rtt_ms.push_back(rtt);
        state.stored += ids->size();
      }
    });
  }
  for (std::thread& t : streams) t.join();
  const double seconds = MsSince(start) / 1000;
  watchdog.Stop();

  MutexLock lock(&state.mu);
  bool ok = state.error.ok() && !watchdog.fired();
  if (watchdog.fired()) {
    std::fprintf(stderr, "fill: gave up after %llu s\n",
                 static_cast<unsigned long long>(options.timeout_s));
  } else if (!state.error.ok()) {
    std::fprintf(stderr, "fill: Put failed: %s\n", Describe(state.error).c_str());
  }
  uint64_t ready_after = 0;
  if (auto stats = (*client)->Stats(options.queue); stats.ok()) {
    ready_after = stats->ready();
  } else {
    std::fprintf(stderr, "fill: stats of %s: %s\n", options.queue.c_str(),
                 Describe(stats.status()).c_str());
    ok = false;
  }
  const uint64_t stored = state.stored.load();
  if (ok && ready_after != ready_before + stored) {
    std::fprintf(stderr, "fill: queue %s holds %llu ready tasks, expected %llu\n",
                 options.queue.c_str(), static_cast<unsigned long long>(ready_after),
                 static_cast<unsigned long long>(ready_before + stored));
    ok = false;
  }
  std::vector<double>& rtt = state.rtt_ms;
  std::sort(rtt.begin(), rtt.end());
  double mean = 0;
  for (double r : rtt) mean += r;
  if (!rtt.empty()) mean /= static_cast<double>(rtt.size());
  const double rate = seconds > 0 ? static_cast<double>(stored) / seconds : 0;
  absl::PrintF("fill:  %d tasks x %d B on queue %s in %.3f s: %.0f tasks/s, %.1f MB/s of payload\n",
               stored, options.bytes, options.queue, seconds, rate,
               rate * static_cast<double>(options.bytes) / 1e6);
  absl::PrintF("       %d Puts of %d from %d streams, round trip mean %.2f p50 %.2f p99 %.2f max %.2f ms; queue ready %d\n",
               rtt.size(), options.batch, options.streams, mean, Percentile(rtt, 0.5),
               Percentile(rtt, 0.99), Percentile(rtt, 1.0), ready_after);
  absl::PrintF("RESULT fill tasks=%d bytes=%d seconds=%.3f tasks_per_s=%.0f put_rtt_mean_ms=%.2f "
               "put_rtt_p99_ms=%.2f put_rtt_max_ms=%.2f ready=%d ok=%d\n",
               stored, options.bytes, seconds, rate, mean, Percentile(rtt, 0.99),
               Percentile(rtt, 1.0), ready_after, ok ? 1 : 0);
  return ok ? 0 : 1;
}

// ---- start -----------------------------------------------------------------

// Reads the lines appended to a log file since the last call.
class LogTail {
 public:
  // Starts reading at byte `offset` (what was there before is not ours).
  LogTail(std::string path, off_t offset) : path_(std::move(path)), offset_(offset) {}

  // Complete new lines, in order.
  std::vector<std::string> NewLines() {
    std::vector<std::string> lines;
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lines;
    char buf[65536];
    for (;;) {
      ssize_t n = ::pread(fd, buf, sizeof buf, offset_);
      if (n <= 0) break;
      offset_ += n;
      partial_.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    size_t from = 0, nl;
    while ((nl = partial_.find('\n', from)) != std::string::npos) {
      lines.push_back(partial_.substr(from, nl - from));
      from = nl + 1;
    }
    partial_.erase(0, from);
    return lines;
  }

 private:
  const std::string path_;
  off_t offset_;
  std::string partial_;
};

// The time stamped at the start of a taskq log line
// ("2026-11-29T08:19:56.123Z taskq-master INFO ...").
std::optional<absl::Time> LineStamp(absl::string_view line) {
  absl::string_view stamp = line.substr(0, line.find(' '));
  if (!absl::ConsumeSuffix(&stamp, "Z")) return std::nullopt;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%dT%H:%M:%E*S", std::string(stamp), absl::UTCTimeZone(), &t,
                       &err)) {
    return std::nullopt;
  }
  return t;
}

// The "N" of "... in N ms" at the end of the recovery line, or -1.
int64_t StatedMs(absl::string_view line) {
  size_t in = line.rfind(" in ");
  if (in == absl::string_view::npos) return -1;
  absl::string_view rest = line.substr(in + 4);
  int64_t ms;
  if (!absl::ConsumeSuffix(&rest, " ms") || !absl::SimpleAtoi(rest, &ms)) return -1;
  return ms;
}

// The port file's first line once it exists (the master writes it
// atomically, so existing means complete).
std::optional<std::string> ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line) || line.empty()) return std::nullopt;
  return line;
}

// Whether `pid` (our child) has exited; reaps it.
bool ChildExited(pid_t pid, int* status) { return ::waitpid(pid, status, WNOHANG) == pid; }

int Start(const Options& options) {
  ::unlink(options.port_file.c_str());
  int log_fd = ::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    std::perror(options.log_file.c_str());
    return 1;
  }
  // Only what is logged from here on counts (the file may hold an earlier run).
  struct stat log_stat {};
  ::fstat(log_fd, &log_stat);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, log_fd, STDERR_FILENO);
  std::vector<char*> argv;
  for (const std::string& a : options.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  pid_t pid = 0;
  const absl::Time start_wall = absl::Now();
  const auto start = SteadyClock::now();
  int err = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(log_fd);
  if (err != 0) {
    std::fprintf(stderr, "start: cannot run %s: %s\n", argv[0], std::strerror(err));
    return 1;
  }
  {
    std::ofstream pid_out(options.pid_file, std::ios::trunc);
    pid_out << pid << "\n";
  }

  LogTail tail(options.log_file, log_stat.st_size);
  double recovered_seen_ms = -1, recovered_stamp_ms = -1, serving_seen_ms = -1,
         port_file_ms = -1, first_task_ms = -1, first_answer_ms = -1;
  int64_t stated_ms = -1;
  std::string recovered_line, address, failure;
  const absl::Time deadline = start_wall + absl::Seconds(static_cast<int64_t>(options.timeout_s));

  // Notes the recovery and serving lines among the new lines of the log.
  auto read_log = [&] {
    double now_ms = MsSince(start);
    for (const std::string& line : tail.NewLines()) {
      if (recovered_seen_ms < 0 && absl::StrContains(line, "store: recovered")) {
        recovered_seen_ms = now_ms;
        recovered_line = line;
        stated_ms = StatedMs(line);
        if (auto t = LineStamp(line)) {
          recovered_stamp_ms = absl::ToDoubleMilliseconds(*t - start_wall);
        }
      }
      if (serving_seen_ms < 0 && absl::StrContains(line, "serving taskq.v1")) {
        serving_seen_ms = now_ms;
      }
    }
  };
  // Polls every 200 µs: the log, the port file, and the child.
  while (port_file_ms < 0) {
    read_log();
    if (auto port = ReadPortFile(options.port_file)) {
      port_file_ms = MsSince(start);
      address = *port;
      break;
    }
    int status = 0;
    if (ChildExited(pid, &status)) {
      failure = absl::StrFormat("the master exited (status 0x%x) before writing its port file",
                                status);
      break;
    }
    if (absl::Now() >= deadline) {
      failure = "no port file before the timeout";
      break;
    }
    absl::SleepFor(absl::Microseconds(200));
  }
  // Both lines are logged before the port file is written; a last look
  // catches them if they appeared within the poll that found it.
  read_log();

  if (failure.empty() && !options.probe_queue.empty()) {
    ConnectOptions connect = options.connect;
    connect.master = address;
    auto client = ConnectClient(connect);
    if (!client.ok()) {
      failure = Describe(client.status());
    } else {
      GetOptions get;
      get.max_tasks = 1;
      get.nowait = true;
      get.lease = true;
      absl::Status last;
      while (first_task_ms < 0 && absl::Now() < deadline) {
        auto got = (*client)->Get(options.probe_queue, get);
        double now_ms = MsSince(start);
        if (got.ok() || got.status().code() == absl::StatusCode::kDeadlineExceeded) {
          if (first_answer_ms < 0) first_answer_ms = now_ms;
        }
        if (got.ok() && !got->empty()) {
          first_task_ms = now_ms;
          const v1::Delivery& d = got->front();
          // Back to ready, no attempt counted: the backlog stays whole.
          if (auto s = (*client)->Release(d.task().id(), d.lease_id()); !s.ok()) {
            std::fprintf(stderr, "start: releasing probe task %llu: %s\n",
                         static_cast<unsigned long long>(d.task().id()), Describe(s).c_str());
          }
          break;
        }
        last = got.ok() ? absl::NotFoundError("the queue is empty") : got.status();
        absl::SleepFor(absl::Milliseconds(1));
      }
      if (first_task_ms < 0) {
        failure = absl::StrCat("no task from queue ", options.probe_queue,
                               " before the timeout; last answer ", Describe(last));
      }
    }
  }

  absl::PrintF("start: master pid %d on %s\n", pid, address.empty() ? "?" : address);
  if (!recovered_line.empty()) absl::PrintF("       log: %s\n", recovered_line);
  absl::PrintF("       from exec: recovery line seen %.1f ms (stamped %.0f ms, states %d ms), "
               "serving line %.1f ms, port file %.1f ms",
               recovered_seen_ms, recovered_stamp_ms, stated_ms, serving_seen_ms, port_file_ms);
  if (!options.probe_queue.empty()) {
    absl::PrintF(", first answer %.1f ms, first task %.1f ms", first_answer_ms, first_task_ms);
  }
  absl::PrintF("\n");
  if (!failure.empty()) std::fprintf(stderr, "start: %s\n", failure.c_str());
  absl::PrintF("RESULT start pid=%d address=%s recovered_line_ms=%.1f recovered_stamp_ms=%.0f "
               "stated_ms=%d serving_line_ms=%.1f port_file_ms=%.1f first_answer_ms=%.1f "
               "first_task_ms=%.1f ok=%d\n",
               pid, address.empty() ? "-" : address, recovered_seen_ms, recovered_stamp_ms,
               stated_ms, serving_seen_ms, port_file_ms, first_answer_ms, first_task_ms,
               failure.empty() ? 1 : 0);
  std::fflush(stdout);
  return failure.empty() ? 0 : 1;
}

// ---- drain -----------------------------------------------------------------

// What the drain streams share.
struct DrainState {
  std::atomic<uint64_t> taken{0};
  std::atomic<uint64_t> gets{0};
  Mutex mu;
  absl::Status error ABSL_GUARDED_BY(mu);
  double last_ms ABSL_GUARDED_BY(mu) = 0;  // when the last tasks arrived
};

int Drain(const Options& options) {
  auto client = ConnectClient(options.connect);
  if (!client.ok()) {
    std::fprintf(stderr, "drain: %s\n", Describe(client.status()).c_str());
    return 1;
  }
  uint64_t target = options.tasks;
  if (!options.tasks_set) {
    auto stats = (*client)->Stats(options.queue);
    if (!stats.ok()) {
      std::fprintf(stderr, "drain: stats of %s: %s\n", options.queue.c_str(),
                   Describe(stats.status()).c_str());
      return 1;
    }
    target = stats->ready();
  }
  DrainState state;
  std::atomic<uint64_t>& taken = state.taken;
  std::atomic<uint64_t>& gets = state.gets;
  CallCanceller canceller;
  const auto start = SteadyClock::now();
  Watchdog watchdog(absl::Now() + absl::Seconds(static_cast<int64_t>(options.timeout_s)),
                    &canceller, absl::Seconds(5), [&] {
                      std::fprintf(stderr, "drain: %llu/%llu tasks taken\n",
                                   static_cast<unsigned long long>(taken.load()),
                                   static_cast<unsigned long long>(target));
                    });
  std::vector<std::thread> streams;
  for (uint64_t k = 0; k < options.streams; ++k) {
    streams.emplace_back([&] {
      GetOptions get;
      get.max_tasks = kMaxTasksPerGet;
      get.timeout = absl::Seconds(1);
      get.canceller = &canceller;
      while (taken.load() < target) {
        auto got = (*client)->Get(options.queue, get);
        ++gets;
        if (!got.ok()) {
          // Empty for a second: nothing more is coming.
          if (got.status().code() == absl::StatusCode::kDeadlineExceeded) return;
          MutexLock lock(&state.mu);
          if (state.error.ok()) state.error = got.status();
          canceller.Cancel();
          return;
        }
        taken += got->size();
        MutexLock lock(&state.mu);
        state.last_ms = MsSince(start);
      }
    });
  }
  for (std::thread& t : streams) t.join();
  watchdog.Stop();
  MutexLock lock(&state.mu);
  bool ok = state.error.ok() && !watchdog.fired() && taken.load() >= target;
  if (!state.error.ok()) {
    std::fprintf(stderr, "drain: Get failed: %s\n", Describe(state.error).c_str());
  }
  if (taken.load() < target) {
    std::fprintf(stderr, "drain: took %llu of %llu tasks\n",
                 static_cast<unsigned long long>(taken.load()),
                 static_cast<unsigned long long>(target));
  }
  const double seconds = state.last_ms / 1000;
  const double rate = seconds > 0 ? static_cast<double>(taken.load()) / seconds : 0;
  absl::PrintF("drain: %d tasks taken from %s in %.3f s: %.0f tasks/s (%d Gets from %d streams)\n",
               taken.load(), options.queue, seconds, rate, gets.load(), options.streams);
  absl::PrintF("RESULT drain tasks=%d seconds=%.3f tasks_per_s=%.0f gets=%d ok=%d\n",
               taken.load(), seconds, rate, gets.load(), ok ? 1 : 0);
  return ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  InitLogging("taskq-backlog-bench");
  Options options;
  if (std::optional<int> exit = ParseFlags(argc, argv, &options)) return *exit;
  if (options.mode == "fill") return Fill(options);
  if (options.mode == "start") return Start(options);
  return Drain(options);
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
