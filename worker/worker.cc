#include "worker/worker.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/runtime/deadline_stop.h"
#include "common/runtime/io.h"
#include "common/runtime/sleep.h"
#include "common/runtime/when_all.h"
#include "worker/backoff.h"
#include "worker/builtin_handlers.h"
#include "worker/text_util.h"

namespace taskq {
namespace {

// Heartbeat period bounds. The master's clock may differ from ours, so the
// period derived from the lease deadline is clamped: never a busy loop,
// never so slow that a default 30 s lease could lapse.
constexpr absl::Duration kMinExtendEvery = absl::Milliseconds(200);
constexpr absl::Duration kMaxExtendEvery = absl::Seconds(10);
// Heartbeats due this soon ride along with one due now (fewer messages).
constexpr absl::Duration kExtendSlack = absl::Milliseconds(50);
// A lease's time left, as the master states it, is counted from when we
// read it; the message was in flight before that. This much of the time
// left (at most a quarter of it) is not counted on, so a task stops before
// its lease can run out on the master.
constexpr absl::Duration kFenceMargin = absl::Seconds(1);
// After WritesDone, how long the master gets to end the stream.
constexpr absl::Duration kHalfCloseWait = absl::Seconds(5);
// The master refuses a stream (bad token, unknown queue) right after our
// first message; a stream still open this long after it is taken as up.
// A message from the master confirms it sooner.
constexpr absl::Duration kConfirmConnected = absl::Milliseconds(250);
// A session that lasted this long counts as healthy (backoff resets).
constexpr absl::Duration kHealthySession = absl::Seconds(1);
// GetCluster at start: a master that does not answer this fast is asked no
// more; the streams' refusals route the queues instead.
constexpr absl::Duration kAskClusterTimeout = absl::Seconds(5);
// A stream joined by a queue while up is reconnected naming it once its
// tasks finished, or after this long (its running tasks are released).
constexpr absl::Duration kCycleWait = absl::Seconds(30);
// Refusals that move a queue are retried at once this many times in a
// row; then with backoff (two masters disagreeing about an owner).
constexpr int kMaxQuickMoves = 16;
// A stream whose master was not reached this many times in a row asks the
// master given for the map again (its queues' owner may be down, or back
// on another address).
constexpr int kUnreachableBeforeAsking = 3;
// Results per message stop here; the rest go in the next one.
constexpr size_t kMaxBatchBytes = 4 << 20;
// Sanity bounds for thread counts.
constexpr int kMaxThreads = 1024;
constexpr int kMaxIoThreads = 64;

absl::Duration ExtendPeriod(int64_t deadline_unix_ms, absl::Time now) {
  if (deadline_unix_ms <= 0) return kMaxExtendEvery;
  absl::Duration left = absl::FromUnixMillis(deadline_unix_ms) - now;
  return std::clamp(left / 3, kMinExtendEvery, kMaxExtendEvery);
}

// When a lease the master says has `left_ms` left, read at `now`, may run
// out on the master (see TaskRun::fence_at).
absl::Time FenceAt(int64_t left_ms, absl::Time now) {
  const absl::Duration left = absl::Milliseconds(left_ms);
  return now + left - std::min(kFenceMargin, left / 4);
}

std::string Ms(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

}  // namespace

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return host[0] != '\0' ? host : "localhost";
}

std::string DefaultWorkerId() { return absl::StrCat(HostName(), ":", ::getpid()); }

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
  if (options_.queues.empty()) options_.queues = {"tasks"};
  if (options_.threads == 0) {
    options_.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  if (options_.concurrency == 0) options_.concurrency = options_.threads;
  if (options_.id.empty()) options_.id = DefaultWorkerId();
  host_ = HostName();
  options_.connect = ResolveConnectOptions(options_.connect);
  absl::StatusOr<ExecHandler> exec = ExecHandler::Create(options_.exec);
  if (!exec.ok()) {
    exec_status_ = exec.status();
    exec = ExecHandler();  // Run() refuses to start anyway
  }
  // Cannot fail: the names are valid and the registry is empty.
  RegisterBuiltinHandlers(&handlers_, *std::move(exec)).IgnoreError();
}

Worker::~Worker() {
  Stop();
  // Synchronous handlers first: when they return they hop back onto io_.
  cpu_.reset();
  io_.reset();
  slots_.reset();
}

absl::Status Worker::ValidateOptions() const {
  if (!exec_status_.ok()) return exec_status_;
  if (options_.queues.size() > kMaxQueuesPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat(
        options_.queues.size(), " queues given; a worker serves at most ", kMaxQueuesPerWorker));
  }
  for (const auto& q : options_.queues) {
    if (auto s = ValidateName("queue", q); !s.ok()) return s;
  }
  if (options_.threads < 1 || options_.threads > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be 1-", kMaxThreads));
  }
  if (options_.io_threads < 1 || options_.io_threads > kMaxIoThreads) {
    return absl::InvalidArgumentError(absl::StrCat("io threads must be 1-", kMaxIoThreads));
  }
  if (options_.concurrency < 1) return absl::InvalidArgumentError("concurrency must be at least 1");
  if (options_.prefetch < 0) return absl::InvalidArgumentError("prefetch must not be negative");
  if (static_cast<uint64_t>(options_.concurrency) + static_cast<uint64_t>(options_.prefetch) >
      kMaxCredits) {
    return absl::InvalidArgumentError(
        absl::StrCat("concurrency + prefetch must be at most ", kMaxCredits));
  }
  if (options_.id.size() > kMaxWorkerIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id is longer than ", kMaxWorkerIdBytes, " bytes"));
  }
  if (options_.drain_timeout < absl::ZeroDuration() || options_.stop_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain timeout must not be negative");
  }
  const absl::Duration keepalive = options_.connect.keepalive;
  if (keepalive < kMinKeepalive || keepalive > kMaxKeepalive) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keepalive must be ", absl::FormatDuration(kMinKeepalive), " to ",
        absl::FormatDuration(kMaxKeepalive), ", not ", absl::FormatDuration(keepalive)));
  }
  const absl::Duration connect = options_.connect.connect_timeout;
  if (connect < kMinConnectTimeout || connect > kMaxConnectTimeout) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connect timeout must be ", absl::FormatDuration(kMinConnectTimeout), " to ",
        absl::FormatDuration(kMaxConnectTimeout), ", not ", absl::FormatDuration(connect)));
  }
  return absl::OkStatus();
}

absl::Status Worker::Run() {
  if (auto s = ValidateOptions(); !s.ok()) return s;
  auto connection = Connect(options_.connect);
  if (!connection.ok()) return connection.status();
  // The one of --join's masters that answered (the logs name it).
  options_.connect.master = connection->master;
  seed_channel_ = connection->channel;
  io_ = std::make_unique<rt::Scheduler>(
      rt::SchedulerOptions{.threads = options_.io_threads, .name = "worker-io"});
  cpu_ = std::make_unique<ThreadPool>(static_cast<size_t>(options_.threads), "worker-cpu");
  slots_ = std::make_unique<rt::Semaphore>(options_.concurrency);
  std::vector<rt::Task<void>> top;
  top.push_back(Serve(std::move(connection->token)));
  if (options_.stop_signal_fd >= 0) {
    top.push_back(WatchSignals(options_.stop_signal_fd, serve_done_.get_token()));
  }
  io_->BlockOn(rt::WhenAll(std::move(top)));
  if (!has_stuck_handlers()) {
    // Nothing runs any more: free the threads now (the destructor would).
    cpu_.reset();
    io_->Shutdown();
  }
  LogInfo("taskq-worker %s stopped", options_.id);
  return absl::OkStatus();
}

rt::Task<v1::GetClusterResponse> Worker::AskCluster(v1::TaskQueue::Stub* stub,
                                                     const std::string& token) {
  v1::GetClusterResponse response;
  grpc::ClientContext context;
  // Not waiting for a master that is not up: it is retried by the stream.
  PrepareContext(&context, token, kAskClusterTimeout);
  v1::GetClusterRequest request;
  grpc::Status status = co_await rt::CallUnary(
      [&](auto done) { stub->async()->GetCluster(&context, &request, &response, std::move(done)); },
      &context, stop_.get_token());
  if (!status.ok()) {
    // UNIMPLEMENTED: an older master, which has no cluster. Otherwise the
    // streams' refusals (redirects) route the queues instead.
    if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
      LogDebug("cannot read the cluster map from %s: %s; opening one stream there",
               options_.connect.master, ToAbslStatus(status).ToString());
    }
    response.Clear();
  }
  co_return response;
}

rt::Task<void> Worker::Serve(std::string token) {
  const std::string& seed = options_.connect.master;
  std::map<WorkRoute, std::vector<std::string>> groups;
  {
    auto stub = v1::TaskQueue::NewStub(seed_channel_);
    v1::GetClusterResponse cluster = co_await AskCluster(stub.get(), token);
    groups = GroupQueuesByOwner(cluster, options_.queues, seed);
    if (cluster.clustered()) {
      std::vector<std::string> plan;
      for (const auto& [route, queues] : groups) {
        plan.push_back(absl::StrCat(route.Key(), "=", absl::StrJoin(queues, ",")));
      }
      LogInfo("taskq-worker %s: %s is master \"%s\" of a cluster; one stream per master: %s",
              options_.id, seed, cluster.self(), absl::StrJoin(plan, " "));
    }
  }
  std::vector<Link*> to_spawn;
  {
    MutexLock lock(&mu_);
    for (const auto& [route, queues] : groups) {
      Link* link = LinkFor(route);
      for (const std::string& q : queues) {
        if (AddQueue(link, q)) to_spawn.push_back(link);
      }
    }
  }
  SpawnLoops(to_spawn, token);
  for (;;) {
    links_done_.Clear();
    {
      MutexLock lock(&mu_);
      if (loops_running_ == 0) break;
    }
    absl::Status woke = co_await links_done_.Wait();
    woke.IgnoreError();
  }
  co_await WaitForHandlers();
  serve_done_.request_stop();
}

Worker::Link* Worker::LinkFor(const WorkRoute& route) {
  std::unique_ptr<Link>& slot = links_[route.Key()];
  if (slot == nullptr) {
    slot = std::make_unique<Link>();
    slot->route = route;
    std::shared_ptr<grpc::Channel> channel = seed_channel_;
    if (route.address != options_.connect.master) {
      // Same token and TLS settings as the master given, another address.
      ConnectOptions other = options_.connect;
      other.master = route.address;
      other.masters.clear();
      auto connection = Connect(other);
      if (connection.ok()) {
        channel = connection->channel;
      } else {
        // The files were readable a moment ago; the stream's refusal says why.
        LogWarning("cannot make a channel to %s: %s", route.address,
                   connection.status().message());
        channel = grpc::CreateChannel(route.address, grpc::InsecureChannelCredentials());
      }
    }
    slot->stub = v1::TaskQueue::NewStub(channel);
  }
  return slot.get();
}

bool Worker::AddQueue(Link* link, const std::string& queue) {
  if (std::find(link->queues.begin(), link->queues.end(), queue) == link->queues.end()) {
    link->queues.push_back(queue);
  }
  if (link->session_live && !link->half_closed &&
      std::find(link->started.begin(), link->started.end(), queue) == link->started.end() &&
      !link->cycle) {
    // The live stream's Start did not name it: let the stream's tasks
    // finish (no new credits), then reconnect naming it too.
    LogInfo("taskq-worker %s: queue %s joins the stream to %s; reconnecting it when its %d "
            "task(s) finish",
            options_.id, queue, link->route.address, LiveUnsettled(*link));
    link->cycle = true;
    link->cycle_deadline = absl::Now() + kCycleWait;
    link->outbox_event.Set();
  }
  if (link->loop_running) return false;
  link->loop_running = true;
  ++loops_running_;
  return true;
}

void Worker::SpawnLoops(const std::vector<Link*>& links, const std::string& token) {
  for (Link* link : links) io_->Spawn(LinkLoop(link, token), "work stream");
}

bool Worker::EndLoop(Link* link) {
  // Decided in the same critical section as the reason to end, so a queue
  // added later finds loop_running false and spawns a new loop.
  link->loop_running = false;
  return --loops_running_ == 0;
}

rt::Task<bool> Worker::Reroute(Link* link, const std::string& token) {
  auto stub = v1::TaskQueue::NewStub(seed_channel_);
  v1::GetClusterResponse cluster = co_await AskCluster(stub.get(), token);
  if (!cluster.clustered()) co_return false;
  std::vector<Link*> to_spawn;
  bool moved = false;
  {
    MutexLock lock(&mu_);
    if (stopping_) co_return false;
    auto groups = GroupQueuesByOwner(cluster, link->queues, options_.connect.master);
    for (const auto& [route, queues] : groups) {
      if (route == link->route) continue;
      Link* target = LinkFor(route);
      for (const std::string& q : queues) {
        link->queues.erase(std::find(link->queues.begin(), link->queues.end(), q));
        LogInfo("taskq-worker %s: queue %s moves from the stream to %s to %s (cluster map)",
                options_.id, q, link->route.Key(), route.Key());
        if (AddQueue(target, q)) to_spawn.push_back(target);
        moved = true;
      }
    }
  }
  SpawnLoops(to_spawn, token);
  co_return moved;
}

rt::Task<void> Worker::LinkLoop(Link* link, std::string token) {
  const std::string& master = link->route.address;
  Backoff backoff;
  int quick_moves = 0;  // refusals that moved a queue, since the last healthy session
  int unreachable = 0;  // attempts in a row that reached no master
  bool last = false;      // this was the last loop running
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stopping_ || link->queues.empty()) {
        last = EndLoop(link);
        break;
      }
    }
    SessionResult result = co_await RunSession(link, token);
    bool cycled = false;
    bool moved = false;
    std::vector<Link*> to_spawn;
    {
      MutexLock lock(&mu_);
      if (stopping_) {
        last = EndLoop(link);
        break;
      }
      cycled = std::exchange(link->cycle, false) && result.connected;
      // A refusal naming one of our queues' owner: move that queue.
      const std::string refused = RefusedQueue(result.status);
      auto it = std::find(link->queues.begin(), link->queues.end(), refused);
      if (!refused.empty() && it != link->queues.end()) {
        if (auto to = RouteAfterRefusal(result.status, refused, link->route); to.has_value()) {
          link->queues.erase(it);
          Link* target = LinkFor(*to);
          LogInfo("taskq-worker %s: queue %s moves from the stream to %s to %s: %s", options_.id,
                  refused, link->route.Key(), to->Key(), result.status.message());
          if (AddQueue(target, refused)) to_spawn.push_back(target);
          moved = true;
        }
      }
    }
    SpawnLoops(to_spawn, token);
    if (result.healthy) {
      backoff.Reset();
      quick_moves = 0;
    }
    unreachable = !result.connected && !moved && absl::IsUnavailable(result.status) &&
                          RefusedQueue(result.status).empty()
                      ? unreachable + 1
                      : 0;
    if (unreachable >= kUnreachableBeforeAsking && master != options_.connect.master) {
      // Its master may be down for good or back elsewhere: the master
      // given knows where the queues are now.
      if (co_await Reroute(link, token)) continue;
    }
    // A moved queue or a new queue set: try again at once (a few times, in
    // case two masters disagree about an owner).
    if (cycled || (moved && ++quick_moves <= kMaxQuickMoves)) continue;
    const absl::Duration delay = backoff.Next();
    const std::string why = result.status.ToString();
    if (result.connected) {
      LogInfo("taskq-worker %s disconnected from %s: %s; reconnecting in %s", options_.id, master,
              why, Ms(delay));
    } else if (absl::IsUnavailable(result.status)) {
      LogInfo("taskq-worker %s cannot reach %s: %s; reconnecting in %s", options_.id, master, why,
              Ms(delay));
    } else {
      LogWarning("taskq-worker %s: %s refused the stream: %s; reconnecting in %s", options_.id,
                 master, why, Ms(delay));
    }
    if (absl::IsUnauthenticated(result.status) || absl::IsPermissionDenied(result.status)) {
      if (options_.connect.token_file.empty()) {
        LogError("the master refused this worker's credential; check its join bundle");
      } else {
        LogError("the master refused this worker's token; check --token-file (%s)",
                 options_.connect.token_file);
      }
    }
    // CANCELLED when Stop() interrupts the wait.
    absl::Status slept = co_await rt::SleepFor(delay, stop_.get_token());
    slept.IgnoreError();
    {
      MutexLock lock(&mu_);
      if (stopping_) {
        last = EndLoop(link);
        break;
      }
    }
    // Pick up a rotated token before trying again (a token file's; an
    // inline token from a join bundle stays as it is).
    if (!options_.connect.token_file.empty()) {
      auto fresh = LoadToken(options_.connect.token_file);
      if (fresh.ok()) {
        token = *std::move(fresh);
      } else {
        LogWarning("cannot re-read the token file: %s; using the previous token",
                   fresh.status().message());
      }
    }
  }
  metrics_.MasterConnected(link->route.Key(), false);
  if (last) links_done_.Set();
}

rt::Task<void> Worker::WatchSignals(int fd, std::stop_token stop) {
  int seen = 0;
  for (;;) {
    absl::Status ready = co_await rt::WaitReadable(fd, stop);
    if (!ready.ok()) co_return;  // Serve() ended
    signalfd_siginfo info;
    ssize_t n = ::read(fd, &info, sizeof info);
    if (n != static_cast<ssize_t>(sizeof info)) {
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        LogError("cannot read the signal descriptor: %s; signals are ignored from now on",
                 std::strerror(errno));
        co_return;
      }
      continue;
    }
    const char* name = ::strsignal(static_cast<int>(info.ssi_signo));
    if (++seen == 1) {
      LogInfo("got %s: draining (send it again to stop at once)", name);
      Stop();
    } else {
      LogInfo("got %s again: stopping now", name);
      StopNow();
    }
  }
}

rt::Task<Worker::SessionResult> Worker::RunSession(Link* link, std::string token) {
  SessionResult result;
  grpc::ClientContext context;
  PrepareContext(&context, token);
  uint64_t session = 0;
  {
    MutexLock lock(&mu_);
    if (!stopping_) {
      session = ++link->session;
      link->context = &context;
      link->session_live = true;
      link->session_over = false;
      link->half_closed = false;
      link->connected = false;
      link->drain_expired = false;
      link->cycle = false;
      link->cycle_deadline = absl::InfiniteFuture();
      link->started.clear();
      link->leases.clear();
      link->completions.clear();
      link->failures.clear();
      link->releases.clear();
      link->reports_sent.clear();
      // Slots still held by tasks of a dead stream are not offered again
      // until those tasks finish (FinishTask grants them then).
      const uint32_t held = RunsOf(*link);
      link->credits = window() > held ? window() - held : 0;
    }
  }
  if (session == 0) {
    result.status = absl::CancelledError("stopping");
    co_return result;
  }
  const absl::Time started = absl::Now();
  v1::TaskQueue::Stub* stub = link->stub.get();
  // Stop() cancels link->context while this may still wait for a connection.
  std::shared_ptr<WorkStream> stream =
      WorkStream::Open(&context, [stub, &context](grpc::ClientBidiReactor<v1::WorkRequest,
                                                                        v1::WorkResponse>* r) {
        stub->async()->Work(&context, r);
      });
  bool received = false;
  std::vector<rt::Task<void>> loops;
  loops.push_back(ReadLoop(stream.get(), link, session, &received));
  loops.push_back(WriteLoop(stream.get(), link, session));
  co_await rt::WhenAll(std::move(loops));
  grpc::Status status = co_await stream->Finish();
  bool connected;
  {
    MutexLock lock(&mu_);
    link->context = nullptr;
    connected = link->connected;
    link->connected = false;
  }
  if (connected) {
    metrics_.Disconnected();
    metrics_.MasterConnected(link->route.Key(), false);
  }
  result.status = ToAbslStatus(status);
  result.connected = connected;
  result.healthy = connected && (received || absl::Now() - started >= kHealthySession);
  co_return result;
}

rt::Task<void> Worker::ReadLoop(WorkStream* stream, Link* link, uint64_t session, bool* received) {
  v1::WorkResponse response;
  for (;;) {
    bool ok = co_await stream->Read(&response);
    if (!ok) break;
    *received = true;
    HandleResponse(link, session, &response);
    response.Clear();
  }
  EndSession(link, session);
}

void Worker::EndSession(Link* link, uint64_t session) {
  StopList to_stop;
  {
    MutexLock lock(&mu_);
    size_t unsent = link->completions.size() + link->failures.size() + link->releases.size();
    if (unsent > 0) {
      LogWarning("%d report(s) were not sent before the stream to %s ended; the master will "
                 "hand those tasks out again",
                 unsent, link->route.address);
    }
    link->session_live = false;
    link->session_over = true;
    // The master takes this stream's leases back when it sees it end, and
    // may hand the tasks to another worker at once: stop them all now
    // (those not started never start).
    size_t running = 0;
    for (auto& [id, run] : runs_) {
      if (run.link != link || run.session != session || run.settled != Settled::kNo) continue;
      running += run.started ? 1 : 0;
      Settle(id, run, Settled::kStreamEnded, &to_stop);
    }
    if (running > 0) {
      LogWarning("the stream to %s ended: stopping %d running task(s); the master hands them "
                 "out again",
                 link->route.address, running);
    }
    link->leases.clear();
    link->completions.clear();
    link->failures.clear();
    link->releases.clear();
    link->reports_sent.clear();
    link->credits = 0;
  }
  RequestStops(to_stop);
  link->outbox_event.Set();
}

rt::Task<void> Worker::WriteLoop(WorkStream* stream, Link* link, uint64_t session) {
  enum class Action { kWrite, kHalfClose, kCancel, kWait, kExit };
  bool first = true;
  bool cancelled = false;  // we cancelled the call; wait for the reader
  absl::Time confirm_at = absl::InfiniteFuture();
  absl::Time close_deadline = absl::InfiniteFuture();
  rt::Event& outbox_event = link->outbox_event;
  for (;;) {
    // Cleared before looking, so a Set() after the look is not missed.
    outbox_event.Clear();
    Action action = Action::kWait;
    v1::WorkRequest request;
    absl::Time wake = absl::InfiniteFuture();
    StopList to_stop;
    {
      MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      if (link->session_over || link->session != session) {
        action = Action::kExit;
      } else {
        if (!link->connected && now >= confirm_at) MarkConnected(*link);
        FenceLapsedLeases(*link, now, &to_stop);
        const bool drain_due = stopping_ && now >= drain_deadline_;
        const bool cycle_due = link->cycle && now >= link->cycle_deadline;
        if ((drain_due || cycle_due) && !link->drain_expired) {
          link->drain_expired = true;
          size_t released = ReleaseLiveTasks(*link, /*only_waiting=*/false, &to_stop);
          if (released > 0) {
            LogWarning("%s is up: releasing %d running task(s) to %s and telling them to stop",
                       drain_due ? "drain time" : "time to reconnect with a new queue", released,
                       link->route.address);
          }
        }
        if (cancelled) {
          action = Action::kWait;  // until the reader sees the end
        } else if (link->half_closed) {
          action = now >= close_deadline ? Action::kCancel : Action::kWait;
        } else if (TakeOutbox(*link, first, &request)) {
          action = Action::kWrite;
        } else if ((stopping_ || link->cycle) && !first && LiveUnsettled(*link) == 0) {
          // Drained: everything is reported or released. Closing our side
          // lets the master end the stream; we hold no lease any more.
          link->half_closed = true;
          action = Action::kHalfClose;
        }
        if (action == Action::kWait && !cancelled) {
          wake = NextWake(*link, confirm_at, close_deadline);
        }
      }
    }
    RequestStops(to_stop);
    switch (action) {
      case Action::kExit:
        co_return;
      case Action::kWrite: {
        bool ok = co_await stream->Write(request);
        if (!ok) {
          stream->Cancel();  // makes sure the reader wakes up
          co_return;
        }
        if (first) {
          first = false;
          confirm_at = absl::Now() + kConfirmConnected;
        }
        break;
      }
      case Action::kHalfClose:
        stream->WritesDone();
        close_deadline = absl::Now() + kHalfCloseWait;
        break;
      case Action::kCancel:
        LogWarning("%s did not end the stream after it was closed; cancelling it",
                   link->route.address);
        stream->Cancel();
        cancelled = true;
        break;
      case Action::kWait: {
        rt::DeadlineStop until(*io_, wake);
        absl::Status woke = co_await outbox_event.Wait(until.token());
        woke.IgnoreError();  // CANCELLED at `wake`: look again
        break;
      }
    }
  }
}

absl::Time Worker::NextWake(const Link& link, absl::Time confirm_at,
                            absl::Time close_deadline) const {
  absl::Time wake = absl::InfiniteFuture();
  if (link.half_closed) return close_deadline;
  for (const auto& [lease_id, run_id] : link.leases) {
    const TaskRun& run = runs_.at(run_id);
    wake = std::min({wake, run.next_extend, run.fence_at});
  }
  if (!link.drain_expired) {
    if (stopping_) wake = std::min(wake, drain_deadline_);
    if (link.cycle) wake = std::min(wake, link.cycle_deadline);
  }
  if (!link.connected) wake = std::min(wake, confirm_at);
  return wake;
}

void Worker::MarkConnected(Link& link) {
  if (link.connected) return;
  link.connected = true;
  metrics_.Connected(/*reconnect=*/link.ever_connected);
  metrics_.MasterConnected(link.route.Key(), true);
  link.ever_connected = true;
  LogEvent(LogLevel::kInfo, "connected to the master",
           {{"worker", options_.id}, {"master", link.route.address},
            {"queues", absl::StrJoin(link.started, ",")}});
}

bool Worker::TakeOutbox(Link& link, bool first, v1::WorkRequest* request) {
  bool any = false;
  if (first) {
    link.started = link.queues;
    link.cycle = false;  // a queue added before the Start is in it
    link.cycle_deadline = absl::InfiniteFuture();
    auto* start = request->mutable_start();
    for (const auto& q : link.started) start->add_queues(q);
    start->set_worker_id(options_.id);
    start->set_host(host_);
    any = true;
  }
  // A stream about to reconnect with a new queue set takes nothing new.
  if (link.credits > 0 && !stopping_ && !link.cycle) {
    request->set_credits(link.credits);
    metrics_.CreditsGranted(link.credits);
    link.credits = 0;
    any = true;
  }
  if (!link.cycle) link.credits = 0;
  size_t bytes = 0;
  // The master refuses a message with more reports than this; the rest go
  // in the next message.
  size_t room = kMaxReportsPerWorkMessage;
  size_t taken = 0;
  auto& releases = link.releases;
  for (; taken < releases.size() && room > 0; ++taken, --room) {
    link.reports_sent[releases[taken].lease_id()] = ReportKind::kRelease;
    *request->add_releases() = std::move(releases[taken]);
  }
  releases.erase(releases.begin(), releases.begin() + static_cast<ptrdiff_t>(taken));
  any = any || taken > 0;
  taken = 0;
  auto& completions = link.completions;
  for (; taken < completions.size() && bytes < kMaxBatchBytes && room > 0; ++taken, --room) {
    bytes += completions[taken].result().size();
    link.reports_sent[completions[taken].lease_id()] = ReportKind::kCompletion;
    *request->add_completions() = std::move(completions[taken]);
  }
  completions.erase(completions.begin(), completions.begin() + static_cast<ptrdiff_t>(taken));
  any = any || taken > 0;
  taken = 0;
  auto& failures = link.failures;
  for (; taken < failures.size() && bytes < kMaxBatchBytes && room > 0; ++taken, --room) {
    bytes += failures[taken].error().size();
    link.reports_sent[failures[taken].lease_id()] = ReportKind::kFailure;
    *request->add_failures() = std::move(failures[taken]);
  }
  failures.erase(failures.begin(), failures.begin() + static_cast<ptrdiff_t>(taken));
  any = any || taken > 0;
  const absl::Time now = absl::Now();
  for (auto& [lease_id, run_id] : link.leases) {
    TaskRun& run = runs_.at(run_id);
    if (run.next_extend > now + kExtendSlack) continue;
    if (room == 0) break;
    --room;
    request->add_extend_lease_ids(lease_id);
    run.next_extend = now + run.extend_every;
    any = true;
  }
  return any;
}

void Worker::HandleResponse(Link* link, uint64_t session, v1::WorkResponse* response) {
  struct ToStart {
    uint64_t run_id;
    v1::Task task;
    std::stop_token stop;
  };
  std::vector<ToStart> to_start;
  StopList to_stop;
  {
    MutexLock lock(&mu_);
    const bool live = link->session_live && link->session == session;
    if (live) {
      for (const auto& ack : response->acks()) HandleAck(*link, ack, &to_stop);
    }
    const absl::Time now = absl::Now();
    if (live) {
      for (const auto& extended : response->extended()) {
        auto it = link->leases.find(extended.lease_id());
        if (it == link->leases.end() || extended.lease_ms_left() <= 0) continue;
        runs_.at(it->second).fence_at = FenceAt(extended.lease_ms_left(), now);
      }
    }
    for (auto& delivery : *response->mutable_deliveries()) {
      if (!live || link->half_closed) {
        // We closed our side; the master takes the lease back when the
        // stream ends.
        LogDebug("not running task %d: the stream is closing", delivery.task().id());
        continue;
      }
      if (stopping_) {
        // Draining takes nothing new: give it straight back.
        LogDebug("releasing task %d at once: the worker is stopping", delivery.task().id());
        QueueRelease(*link, delivery.task().id(), delivery.lease_id(), absl::ZeroDuration());
        continue;
      }
      const uint64_t run_id = ++next_run_id_;
      TaskRun& run = runs_[run_id];
      run.task_id = delivery.task().id();
      run.lease_id = delivery.lease_id();
      run.link = link;
      run.session = session;
      if (delivery.lease_ms_left() > 0) {
        // Measured on our clock from now: no clock skew in it.
        run.extend_every = std::clamp(absl::Milliseconds(delivery.lease_ms_left()) / 3,
                                      kMinExtendEvery, kMaxExtendEvery);
        run.fence_at = FenceAt(delivery.lease_ms_left(), now);
      } else {
        run.extend_every = ExtendPeriod(delivery.lease_deadline_unix_ms(), now);
      }
      run.next_extend = now + run.extend_every;
      link->leases[run.lease_id] = run_id;
      to_start.push_back({run_id, std::move(*delivery.mutable_task()), run.stop.get_token()});
    }
    // A message from the master proves the stream is up (see Stop()).
    if (live) MarkConnected(*link);
  }
  RequestStops(to_stop);
  for (ToStart& t : to_start) {
    io_->Spawn(RunTask(t.run_id, std::move(t.task), std::move(t.stop)), "task");
  }
  // New leases (heartbeats to plan) or releases to send.
  link->outbox_event.Set();
}

void Worker::HandleAck(Link& link, const v1::WorkResponse::Ack& ack, StopList* to_stop) {
  std::optional<ReportKind> kind;
  if (auto it = link.reports_sent.find(ack.lease_id()); it != link.reports_sent.end()) {
    kind = it->second;
    link.reports_sent.erase(it);
  }
  if (ack.code() == 0) return;
  const auto code = static_cast<absl::StatusCode>(ack.code());
  const std::string why = absl::Status(code, ack.message()).ToString();
  if (ack.task_id() == 0) {
    // A refused heartbeat (the master acks those only when they fail):
    // stop the task; its result would be refused anyway.
    auto it = link.leases.find(ack.lease_id());
    if (it == link.leases.end()) {
      LogDebug("heartbeat for lease %d refused after its task finished: %s", ack.lease_id(), why);
      return;
    }
    const uint64_t run_id = it->second;
    TaskRun& run = runs_.at(run_id);
    if (code == absl::StatusCode::kCancelled) {
      LogInfo("task %d was cancelled: stopping it (%s)", run.task_id, ack.message());
      Settle(run_id, run, Settled::kCancelled, to_stop);
    } else {
      LogWarning("task %d lost its lease %d: %s; stopping it", run.task_id, ack.lease_id(), why);
      Settle(run_id, run, Settled::kLeaseLost, to_stop);
    }
    return;
  }
  if (code == absl::StatusCode::kUnavailable) {
    // Taken by the master but not stored yet (its store failed and retries):
    // unsettled, not refused. Nothing to resend: the master keeps it; if it
    // stops before storing it, the task runs again after the restart.
    LogWarning("%s for task %d is unsettled: %s",
               kind == ReportKind::kFailure   ? "failure report"
               : kind == ReportKind::kRelease ? "release"
                                              : "result",
               ack.task_id(), why);
    return;
  }
  if (kind == ReportKind::kFailure) {
    LogWarning("failure report for task %d not accepted: %s", ack.task_id(), why);
  } else if (kind == ReportKind::kRelease) {
    LogWarning("release of task %d not accepted: %s", ack.task_id(), why);
  } else if (code == absl::StatusCode::kFailedPrecondition) {
    LogWarning("result for task %d discarded: %s", ack.task_id(), ack.message());
  } else if (code == absl::StatusCode::kInvalidArgument) {
    // E.g. a result larger than the master accepts: retrying would produce
    // the same result, so report the task as failed for good.
    LogWarning("result for task %d refused by the master: %s; reporting the task failed",
               ack.task_id(), why);
    v1::FailRequest failure;
    failure.set_task_id(ack.task_id());
    failure.set_lease_id(ack.lease_id());
    failure.set_error(CleanUtf8(absl::StrCat("result refused by the master: ", ack.message()),
                                kMaxErrorBytes));
    failure.set_permanent(true);
    link.failures.push_back(std::move(failure));
  } else {
    LogWarning("result for task %d not accepted: %s", ack.task_id(), why);
  }
}

rt::Task<void> Worker::RunTask(uint64_t run_id, v1::Task task, std::stop_token stop) {
  // Prefetched deliveries wait here for one of the `concurrency` slots.
  absl::Status slot = co_await slots_->Acquire(stop);
  bool start = false;
  {
    MutexLock lock(&mu_);
    TaskRun& run = runs_.at(run_id);
    if (slot.ok() && run.settled == Settled::kNo) {
      run.started = true;
      start = true;
    }
  }
  absl::StatusOr<std::string> result;
  if (!start) {
    if (slot.ok()) slots_->Release();
    result = absl::CancelledError("the task was stopped before it started");
  } else {
    const absl::Time began = absl::Now();
    LogEvent(LogLevel::kDebug, "task started",
             {{"task", task.id()}, {"queue", task.queue()}, {"handler", task.handler()},
              {"attempt", task.attempt()}});
    HandlerContext context(task, options_.id, stop);
    metrics_.TaskStarted();
    result = co_await handlers_.Run(context, cpu_.get());
    metrics_.TaskFinished(task.handler(), result.ok(), absl::Now() - began);
    slots_->Release();
    if (LogEnabled(LogLevel::kDebug)) {
      std::string took = absl::FormatDuration(absl::Now() - began);
      if (result.ok()) {
        LogDebug("task %d done in %s (%d result bytes)", task.id(), took, result->size());
      } else {
        LogDebug("task %d failed in %s: %s", task.id(), took, result.status().ToString());
      }
    }
  }
  FinishTask(run_id, std::move(result));
}

void Worker::FinishTask(uint64_t run_id, absl::StatusOr<std::string> result) {
  bool idle;
  rt::Event* outbox;  // links live as long as the Worker
  {
    MutexLock lock(&mu_);
    auto node = runs_.extract(run_id);
    const TaskRun& run = node.mapped();
    Link& link = *run.link;
    const bool live = link.session_live && link.session == run.session && !link.half_closed;
    if (auto it = link.leases.find(run.lease_id); it != link.leases.end() && it->second == run_id) {
      link.leases.erase(it);
    }
    // The slot is free again: offer it on the stream to the same master,
    // whichever is live now.
    if (link.session_live && !stopping_) ++link.credits;
    absl::Duration release_delay;
    switch (run.settled) {
      case Settled::kNo:
        break;
      case Settled::kLeaseLost:
        LogInfo("task %d stopped: its lease was lost, so its result is not reported", run.task_id);
        break;
      case Settled::kLeaseLapsed:
        LogInfo("task %d stopped: its lease may have run out, so its result is not reported",
                run.task_id);
        break;
      case Settled::kCancelled:
        LogInfo("task %d stopped: it was cancelled, so its result is not reported", run.task_id);
        break;
      case Settled::kReleased:
        LogDebug("task %d stopped: it was released to the master", run.task_id);
        break;
      case Settled::kStreamEnded:
        if (run.started) {
          LogInfo("task %d stopped: its stream ended, so the master took its lease back and its "
                  "result is not reported",
                  run.task_id);
        }
        break;
      case Settled::kStopped:
        LogDebug("task %d stopped: no stream can take its result", run.task_id);
        break;
    }
    if (run.settled != Settled::kNo) {
      // Decided already; nothing to report.
    } else if (!live) {
      LogInfo("result for task %d dropped: the stream it came on has ended, so the master "
              "already took the task back",
              run.task_id);
    } else if (!result.ok() && IsReleaseRequest(result.status(), &release_delay)) {
      LogDebug("task %d released by its handler for %s", run.task_id, Ms(release_delay));
      QueueRelease(link, run.task_id, run.lease_id, release_delay);
    } else if (result.ok()) {
      v1::WorkRequest::Completion completion;
      completion.set_task_id(run.task_id);
      completion.set_lease_id(run.lease_id);
      completion.set_result(*std::move(result));
      link.completions.push_back(std::move(completion));
    } else {
      const absl::Status& status = result.status();
      v1::FailRequest failure;
      failure.set_task_id(run.task_id);
      failure.set_lease_id(run.lease_id);
      failure.set_error(CleanUtf8(status.message().empty() ? status.ToString() : status.message(),
                                  kMaxErrorBytes));
      failure.set_permanent(IsPermanentFailure(status));
      link.failures.push_back(std::move(failure));
    }
    idle = runs_.empty();
    outbox = &link.outbox_event;
  }
  outbox->Set();
  if (idle) idle_event_.Set();
}

rt::Task<void> Worker::WaitForHandlers() {
  StopList to_stop;
  bool any;
  {
    MutexLock lock(&mu_);
    any = !runs_.empty();
    if (any) {
      // No stream can take their results: stop them and wait a little.
      LogInfo("stopping %d task(s) whose results can no longer be reported", runs_.size());
      for (auto& [id, run] : runs_) Settle(id, run, Settled::kStopped, &to_stop);
    }
  }
  if (!any) co_return;
  RequestStops(to_stop);
  rt::DeadlineStop grace(*io_, absl::Now() + options_.stop_grace);
  for (;;) {
    idle_event_.Clear();
    {
      MutexLock lock(&mu_);
      if (runs_.empty()) break;
    }
    absl::Status woke = co_await idle_event_.Wait(grace.token());
    if (!woke.ok()) break;  // the grace is over
  }
  MutexLock lock(&mu_);
  if (!runs_.empty()) {
    stuck_handlers_ = true;
    LogError("%d handler(s) ignored the stop request", runs_.size());
  }
}

void Worker::Settle(uint64_t run_id, TaskRun& run, Settled why, StopList* to_stop) {
  if (run.settled != Settled::kNo) return;
  run.settled = why;
  auto& leases = run.link->leases;
  if (auto it = leases.find(run.lease_id); it != leases.end() && it->second == run_id) {
    leases.erase(it);  // no more heartbeats
  }
  to_stop->push_back(run.stop);
}

void Worker::QueueRelease(Link& link, uint64_t task_id, uint64_t lease_id,
                          absl::Duration delay) {
  v1::ReleaseRequest release;
  release.set_task_id(task_id);
  release.set_lease_id(lease_id);
  const int64_t ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(delay), 0,
                                         std::min<int64_t>(kMaxDelayMs,
                                                           std::numeric_limits<uint32_t>::max()));
  release.set_delay_ms(static_cast<uint32_t>(ms));
  link.releases.push_back(std::move(release));
}

size_t Worker::ReleaseLiveTasks(Link& link, bool only_waiting, StopList* to_stop) {
  if (!link.session_live || link.half_closed) return 0;
  size_t released = 0;
  for (auto& [id, run] : runs_) {
    if (run.link != &link || run.session != link.session || run.settled != Settled::kNo) continue;
    if (only_waiting && run.started) continue;
    QueueRelease(link, run.task_id, run.lease_id, absl::ZeroDuration());
    Settle(id, run, Settled::kReleased, to_stop);
    ++released;
  }
  return released;
}

void Worker::FenceLapsedLeases(Link& link, absl::Time now, StopList* to_stop) {
  std::vector<uint64_t> lapsed;
  for (const auto& [lease_id, run_id] : link.leases) {
    if (runs_.at(run_id).fence_at <= now) lapsed.push_back(run_id);
  }
  for (uint64_t run_id : lapsed) {
    TaskRun& run = runs_.at(run_id);
    LogWarning("task %d: no heartbeat of lease %d was confirmed in time; the lease may run out "
               "on the master, which then hands the task to another worker: stopping it",
               run.task_id, run.lease_id);
    Settle(run_id, run, Settled::kLeaseLapsed, to_stop);
  }
}

size_t Worker::LiveUnsettled(const Link& link) const {
  size_t n = 0;
  for (const auto& [id, run] : runs_) {
    if (run.link == &link && run.session == link.session && run.settled == Settled::kNo) ++n;
  }
  return n;
}

uint32_t Worker::RunsOf(const Link& link) const {
  uint32_t n = 0;
  for (const auto& [id, run] : runs_) n += run.link == &link ? 1 : 0;
  return n;
}

void Worker::RequestStops(StopList& to_stop) {
  for (std::stop_source& s : to_stop) s.request_stop();
  to_stop.clear();
}

void Worker::Stop() {
  StopList to_stop;
  std::vector<rt::Event*> outboxes;
  {
    MutexLock lock(&mu_);
    if (!stopping_) {
      stopping_ = true;
      drain_deadline_ = absl::Now() + options_.drain_timeout;
      // Deliveries not started yet are given back at once: another worker
      // can run them now.
      size_t released = 0;
      for (auto& [key, link] : links_) {
        link->credits = 0;
        released += ReleaseLiveTasks(*link, /*only_waiting=*/true, &to_stop);
      }
      size_t running = 0;
      for (const auto& [id, run] : runs_) running += run.started ? 1 : 0;
      LogInfo("taskq-worker %s stopping: finishing %d running task(s), waiting up to %s%s",
              options_.id, running, absl::FormatDuration(options_.drain_timeout),
              released > 0 ? absl::StrCat("; releasing ", released, " task(s) not started")
                           : std::string());
    }
    for (auto& [key, link] : links_) {
      // Still connecting (gRPC may wait up to its connect timeout): nothing
      // was delivered on this stream, so there is nothing to drain on it;
      // do not wait for the connection.
      if (link->context != nullptr && !link->connected) link->context->TryCancel();
      outboxes.push_back(&link->outbox_event);
    }
  }
  RequestStops(to_stop);
  stop_.request_stop();
  for (rt::Event* e : outboxes) e->Set();
}

void Worker::StopNow() {
  Stop();
  std::vector<rt::Event*> outboxes;
  {
    MutexLock lock(&mu_);
    drain_deadline_ = std::min(drain_deadline_, absl::Now());
    for (auto& [key, link] : links_) outboxes.push_back(&link->outbox_event);
  }
  for (rt::Event* e : outboxes) e->Set();
}

bool Worker::has_stuck_handlers() const {
  MutexLock lock(&mu_);
  return stuck_handlers_;
}

size_t Worker::tasks_in_flight() const {
  MutexLock lock(&mu_);
  return runs_.size();
}

}  // namespace taskq
