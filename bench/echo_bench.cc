// taskq-echo-bench: the raw gRPC floor for bench/compare.sh, against a
// running taskq-echo-server.
//
//   unary   --threads T threads, each making one Unary call at a time
//           (one item each) until --calls calls are done in all; reports
//           calls/s and each call's round trip.
//   stream  one bidi stream: a writer sends messages of --batch items while
//           at most --window items are unanswered; a reader checks every
//           echo (same items, same order). Reports items/s and each
//           message's round trip (--window 1 --batch 1: one at a time).
//
// Both end with a RESULT line (bench_report.h; "tasks" = calls or items)
// and exit 1 if an echo differed or a call failed.
//
// Thread-safety: a program. The stream's writer and reader share the
// in-flight count and send times through Window (a mutex).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "bench/bench_flags.h"
#include "bench/bench_report.h"
#include "common/sync.h"
#include "echo.grpc.pb.h"

namespace taskq::bench {
namespace {

struct Options {
  std::string server;
  uint64_t calls = 100000;
  uint64_t threads = 1;
  uint64_t window = 1000;
  uint64_t batch = 1;
  uint64_t seconds = 120;
};

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server, int index) {
  grpc::ChannelArguments args;
  // One connection per thread, as separate client processes would have.
  args.SetInt("taskq.bench.channel", index);
  return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
}

int RunUnary(const Options& options) {
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::vector<int64_t>> latencies(options.threads);
  const int64_t limit_ns = static_cast<int64_t>(options.seconds) * 1'000'000'000;
  int64_t start_ns = NowNs();
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < options.threads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<Echo::Stub> stub = Echo::NewStub(MakeChannel(options.server, static_cast<int>(t)));
      for (uint64_t i; (i = next.fetch_add(1)) < options.calls && !failed;) {
        EchoMessage request, response;
        request.add_items(absl::StrCat(i));
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        int64_t sent_ns = NowNs();
        grpc::Status status = stub->Unary(&context, request, &response);
        int64_t now_ns = NowNs();
        if (!status.ok() || response.items_size() != 1 || response.items(0) != request.items(0)) {
          std::fprintf(stderr, "unary call %llu failed: %s\n",
                       static_cast<unsigned long long>(i), status.error_message().c_str());
          failed = true;
          return;
        }
        latencies[t].push_back(now_ns - sent_ns);
        if (now_ns - start_ns > limit_ns) {
          std::fprintf(stderr, "unary: time limit of %llu s reached\n",
                       static_cast<unsigned long long>(options.seconds));
          failed = true;
          return;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double seconds = static_cast<double>(NowNs() - start_ns) / 1e9;
  std::vector<int64_t> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  uint64_t done = all.size();
  PrintResult(done, seconds, all, !failed && done == options.calls);
  return failed ? 1 : 0;
}

// Items in flight on the stream, and each message's send time, in order.
class Window {
 public:
  explicit Window(uint64_t size) : size_(size) {}

  // Blocks until `n` more items fit; false once Close() was called.
  bool Acquire(uint64_t n, int64_t sent_ns) {
    MutexLock lock(&mu_);
    while (!closed_ && in_flight_ + n > size_ && in_flight_ > 0) cv_.Wait(&mu_);
    if (closed_) return false;
    in_flight_ += n;
    sent_ns_.push_back(sent_ns);
    return true;
  }
  // The oldest message's echo came back with `n` items; its send time.
  int64_t Release(uint64_t n) {
    MutexLock lock(&mu_);
    in_flight_ -= std::min(in_flight_, n);
    int64_t sent = sent_ns_.empty() ? 0 : sent_ns_.front();
    if (!sent_ns_.empty()) sent_ns_.pop_front();
    cv_.SignalAll();
    return sent;
  }
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    cv_.SignalAll();
  }

 private:
  const uint64_t size_;
  Mutex mu_;
  CondVar cv_;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<int64_t> sent_ns_ ABSL_GUARDED_BY(mu_);
};

int RunStream(const Options& options) {
  std::unique_ptr<Echo::Stub> stub = Echo::NewStub(MakeChannel(options.server, 0));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(static_cast<int64_t>(options.seconds)));
  std::unique_ptr<grpc::ClientReaderWriter<EchoMessage, EchoMessage>> stream =
      stub->Stream(&context);
  Window window(options.window);
  const uint64_t batch = std::min(options.batch, options.window);
  int64_t start_ns = NowNs();
  std::thread writer([&] {
    for (uint64_t begin = 0; begin < options.calls; begin += batch) {
      uint64_t end = std::min(options.calls, begin + batch);
      EchoMessage message;
      for (uint64_t i = begin; i < end; ++i) message.add_items(absl::StrCat(i));
      if (!window.Acquire(end - begin, NowNs())) break;
      if (!stream->Write(message)) break;
    }
    stream->WritesDone();
  });
  std::vector<int64_t> latencies;
  uint64_t received = 0;
  bool ok = true;
  EchoMessage message;
  while (received < options.calls && stream->Read(&message)) {
    int64_t now_ns = NowNs();
    for (const std::string& item : message.items()) {
      if (item != absl::StrCat(received)) {
        std::fprintf(stderr, "stream: item %llu came back as '%s'\n",
                     static_cast<unsigned long long>(received), item.c_str());
        ok = false;
      }
      ++received;
    }
    latencies.push_back(now_ns - window.Release(static_cast<uint64_t>(message.items_size())));
    if (!ok) break;
  }
  double seconds = static_cast<double>(NowNs() - start_ns) / 1e9;
  window.Close();
  if (received < options.calls) context.TryCancel();
  writer.join();
  grpc::Status status = stream->Finish();
  if (received < options.calls) {
    std::fprintf(stderr, "stream: %llu of %llu items came back (%s)\n",
                 static_cast<unsigned long long>(received),
                 static_cast<unsigned long long>(options.calls), status.error_message().c_str());
    ok = false;
  }
  PrintResult(received, seconds, latencies, ok);
  return ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app{"The raw gRPC floor: unary or bidi-stream echo calls against taskq-echo-server.",
               "taskq-echo-bench"};
  app.require_subcommand(1);
  CLI::App* unary = app.add_subcommand("unary", "one call at a time per thread");
  CLI::App* stream = app.add_subcommand("stream", "one bidi stream, --window items in flight");
  for (CLI::App* mode : {unary, stream}) {
    AddText(*mode, "--server", &options.server, "the echo server, HOST:PORT")->required();
    AddCount<uint64_t>(*mode, "--calls", &options.calls,
                       "unary: calls in all; stream: items in all", 1, uint64_t{1} << 32);
    AddCount<uint64_t>(*mode, "--seconds", &options.seconds, "give up after this long", 1, 3600);
  }
  AddCount<uint64_t>(*unary, "--threads", &options.threads, "threads calling", 1, 256);
  AddCount<uint64_t>(*stream, "--window", &options.window, "most items unanswered", 1, 1 << 20);
  AddCount<uint64_t>(*stream, "--batch", &options.batch, "items per message", 1, 10000);
  if (std::optional<int> exit = Parse(app, argc, argv)) return *exit;
  return unary->parsed() ? RunUnary(options) : RunStream(options);
}

}  // namespace
}  // namespace taskq::bench

int main(int argc, char** argv) { return taskq::bench::Main(argc, argv); }
