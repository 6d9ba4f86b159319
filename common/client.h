// taskq::Client: a small synchronous C++ client of the taskq master, one
// method per RPC of taskq.v1.TaskQueue (except the worker's Work stream).
// ResultWaiter / SubmitAndWait (common/result_waiter.h) put tasks and
// collect their results as they arrive (what `taskq submit --wait` runs).
//
//   auto client = taskq::Client::Connect({.master = "10.0.0.5:5000"});
//   if (!client.ok()) ...;
//   auto ids = (*client)->Put("tasks", {spec1, spec2});
//   auto got = (*client)->Get("results", {.timeout = absl::Seconds(1)});
//
// Every call sends the bearer token as metadata and returns the master's
// gRPC status as an absl::Status with the same code and message (see the
// proto's header for what each code means: DEADLINE_EXCEEDED = queue empty,
// RESOURCE_EXHAUSTED = queue full, UNAVAILABLE = master unreachable...).
//
// Waiting calls (Put on a full queue, Get on an empty one, Join) pass their
// timeout to the master and give the gRPC deadline a margin on top, so that
// the master's own "empty"/"full" answer arrives instead of a client-side
// deadline. An infinite timeout waits forever (no deadline). Calls that do
// not wait get ClientOptions::call_timeout as their deadline.
//
// Cluster mode (docs/CLUSTER.md): connected to any master of a cluster, a
// Client follows the FAILED_PRECONDITION redirect a master gives for a
// queue (or task id) another master owns to that master's address (at most
// 3 hops), over one channel per address made like the first, and remembers
// queue -> address so later calls go straight there. Calls by task id go
// to the master whose node number is in the id's top 16 bits (GetCluster's
// list, fetched once when first needed). A queue whose owner is down
// answers UNAVAILABLE "owner NAME is down": returned at once, not retried.
// Against a single master (GetCluster: clustered = false, or UNIMPLEMENTED
// from an older one) nothing of this happens.
//
// Thread-safety: a Client is safe to share between threads (gRPC stubs and
// channels are); calls may run concurrently. A CallCanceller is safe to use
// from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/call_retry.h"
#include "common/channel.h"
#include "common/channel_pool.h"
#include "common/cluster_map.h"
#include "common/grpc_status.h"
#include "common/sync.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// Lets one thread abort calls another thread has in progress (e.g. on
// Ctrl-C). Once Cancel() ran, calls made with this canceller fail at once
// with CANCELLED, and calls in flight are cancelled.
class CallCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class Client;
  // False if already cancelled (the call must not start).
  bool Register(grpc::ClientContext* context);
  void Unregister(grpc::ClientContext* context);

  mutable Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> active_ ABSL_GUARDED_BY(mu_);
};

struct ClientOptions {
  // Deadline of calls that do not wait (admin calls, nowait put/get,
  // Complete, Fail, TaskDone).
  absl::Duration call_timeout = absl::Seconds(30);
  // Added to a waiting call's timeout to form its gRPC deadline.
  absl::Duration wait_margin = absl::Seconds(5);
  // Through UNAVAILABLE (master unreachable, connection lost, master
  // restarting) calls are sent again with backoff until their deadline,
  // when that cannot do harm (common/call_retry.h): reads, Join, lease-mode
  // Get, Ack, and Puts whose tasks all carry a dedup key; other calls only
  // when the request never left this host. false = never retry.
  bool retry = true;
  // Told once when a call starts retrying because the master cannot be
  // reached, and once when a call gets through again (e.g. a line on
  // stderr). May be called from any thread calling the client.
  std::function<void(const absl::Status&)> on_unreachable = nullptr;
  std::function<void()> on_reachable = nullptr;
};

struct PutOptions {
  // Fail at once with RESOURCE_EXHAUSTED if the tasks do not fit.
  bool nowait = false;
  // How long to wait for room in a bounded queue, for the whole Put (all
  // its requests). Infinite = wait as long as it takes.
  absl::Duration timeout = absl::InfiniteDuration();
  // Most tasks per request; 0 = kMaxTasksPerPut. Each request is stored
  // atomically; a Put split into several requests is not (see Put).
  size_t max_batch = 0;
  CallCanceller* canceller = nullptr;
  // Delayed tasks: applied to every task that sets neither delay_ms nor
  // not_before_unix_ms itself (see SetTaskDelay). The master hands a task
  // out at the later of now + delay and not_before. Zero / InfinitePast =
  // ready at once.
  absl::Duration delay = absl::ZeroDuration();
  absl::Time not_before = absl::InfinitePast();
};

// What a Put stored, in request order: ids[i] is the task of tasks[i].
// existing[i] = true when the master stored nothing for tasks[i] because a
// task with the same dedup_key on that queue is not finished yet; ids[i] is
// then that task's id (its result goes to *its* reply_to).
struct PutReceipt {
  std::vector<uint64_t> ids;
  std::vector<bool> existing;  // always the same length as ids
  size_t existing_count() const;
};

// Sets a task's not-before time: `delay` from when the master receives it
// (TaskSpec.delay_ms) and/or an absolute `not_before` (the later wins).
// A delay too long for delay_ms (~49 days) becomes now + delay in
// not_before_unix_ms. INVALID_ARGUMENT for a negative delay or one beyond
// kMaxDelayMs (365 days), or a not_before further away than that.
absl::Status SetTaskDelay(v1::TaskSpec* task, absl::Duration delay,
                          absl::Time not_before = absl::InfinitePast(),
                          absl::Time now = absl::Now());

struct ListDeadOptions {
  // Most tasks to return (1..kMaxListDead; 0 = the master's default, 100).
  uint32_t limit = 0;
  // Page on: only tasks with id > after_id (tasks come in id order).
  uint64_t after_id = 0;
};

struct GetOptions {
  // Up to this many tasks (1..kMaxTasksPerGet; 0 means 1).
  uint32_t max_tasks = 1;
  // DEADLINE_EXCEEDED at once when the queue is empty.
  bool nowait = false;
  // Long-poll up to this long; then DEADLINE_EXCEEDED. Infinite = forever.
  absl::Duration timeout = absl::InfiniteDuration();
  // false = take and acknowledge (Python's queue.get); true = lease: the
  // caller must Complete or Fail each delivery before its lease deadline.
  bool lease = false;
  // Take mode: the task stays unfinished (for Join) until TaskDone.
  bool manual_task_done = false;
  // Lease mode: how long the leases last (100 ms .. 24 h); zero = the
  // queue's lease time.
  absl::Duration lease_time = absl::ZeroDuration();
  // Leases of earlier lease-mode Gets to acknowledge first (see Ack), sent
  // with this request; at most kMaxTasksPerGet.
  std::vector<v1::LeaseRef> acks = {};
  CallCanceller* canceller = nullptr;
};

class Client {
 public:
  // Reads the token and builds the channel (common/channel.h). The master
  // is contacted on the first call, so an unreachable master shows up as
  // UNAVAILABLE from that call, not here.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ConnectOptions& options,
                                                         ClientOptions client_options = {});
  // Over an existing channel (e.g. an in-process one in tests). `dial`
  // makes channels to the other masters of a cluster (nullptr: plaintext).
  Client(std::shared_ptr<grpc::Channel> channel, std::string token,
         ClientOptions client_options = {}, ChannelFactory dial = nullptr,
         std::string address = "");

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- administration ----------------------------------------------------
  // Returns the settings as stored (defaults filled in). exist_ok: succeed
  // if an equal queue exists (ALREADY_EXISTS if it differs). `on`: in a
  // cluster, the master (by name) to own a new queue ("" = the cluster's
  // choice); ignored by a single master.
  absl::StatusOr<v1::QueueConfig> CreateQueue(const v1::QueueConfig& config,
                                              bool exist_ok = false, const std::string& on = "");
  // Every queue, sorted by name: follows the master's pages
  // (ListQueuesRequest) until the last one. `page_size` queues per call
  // (0 = the master's default, 1,000).
  absl::StatusOr<std::vector<v1::QueueStats>> ListQueues(uint32_t page_size = 0);
  absl::StatusOr<v1::QueueStats> Stats(const std::string& queue);
  absl::Status DeleteQueue(const std::string& queue);
  // Drops the ready tasks; returns how many.
  absl::StatusOr<uint64_t> PurgeQueue(const std::string& queue);
  // Changes the settings set in `update` (the rest stay); returns the
  // queue's settings as now stored. NOT_FOUND for an unknown queue.
  absl::StatusOr<v1::QueueConfig> UpdateQueue(const std::string& queue,
                                              const v1::QueueConfigUpdate& update);
  // Python 3.13's Queue.shutdown: from now on puts fail with
  // FAILED_PRECONDITION; gets drain what is left, then fail with
  // OUT_OF_RANGE. `immediate` also drops the ready and delayed tasks now.
  // Returns how many were dropped.
  absl::StatusOr<uint64_t> ShutdownQueue(const std::string& queue, bool immediate = false);

  // The workers connected now (Work streams), oldest first: at most
  // `limit` (0 = the master's default, 1,000) and how many there are.
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers(uint32_t limit = 0);

  // --- credentials (admin) -----------------------------------------------
  // Creates a credential; the response carries its token (or certificate)
  // this once. Not idempotent: sent again only if it never left this host.
  absl::StatusOr<v1::CreateCredentialResponse> CreateCredential(
      const v1::CreateCredentialRequest& request);
  // Every credential, revoked ones too if `include_revoked`.
  absl::StatusOr<std::vector<v1::CredentialInfo>> ListCredentials(bool include_revoked = false);
  // Revokes at once (the master ends the credential's open streams).
  absl::Status RevokeCredential(const std::string& name);

  // --- tasks by id ---------------------------------------------------------
  // State, attempt, holder, last error and history of a live task, or of a
  // recently finished one (without its payload). NOT_FOUND otherwise.
  absl::StatusOr<v1::Task> GetTask(uint64_t task_id);
  // Cancels a delayed, ready, leased or dead task (a CANCELLED result goes
  // to its reply_to); returns the state it was in. FAILED_PRECONDITION if
  // it already finished, NOT_FOUND if unknown.
  absl::StatusOr<v1::TaskState> CancelTask(uint64_t task_id);

  // --- dead letters --------------------------------------------------------
  // Tasks in `queue`'s dead-letter set (the queue other queues name as
  // dead_letter, or a queue that keeps its own), by id, with payload,
  // origin_queue, last_error and history.
  absl::StatusOr<std::vector<v1::Task>> ListDead(const std::string& queue,
                                                 const ListDeadOptions& options = {});
  // Moves one dead task (task_id != 0) or all of them (0) back to their
  // origin queue, ready, attempts reset; returns how many moved.
  absl::StatusOr<uint64_t> RequeueDead(const std::string& queue, uint64_t task_id);
  // Drops every task in `queue`'s dead-letter set; returns how many.
  absl::StatusOr<uint64_t> PurgeDead(const std::string& queue);

  // --- producers ---------------------------------------------------------
  // Puts the tasks; returns their ids in order. More tasks than one request
  // may carry (max_batch, kMaxTasksPerPut, or a quarter of the gRPC message
  // cap in bytes) are sent as several requests in order: each is atomic,
  // the whole is not. If a later request fails, the earlier ones stay put
  // and the error message says how many were.
  absl::StatusOr<std::vector<uint64_t>> Put(const std::string& queue,
                                            std::vector<v1::TaskSpec> tasks,
                                            const PutOptions& options = {});
  // Put that also says which tasks were deduplicated (TaskSpec.dedup_key).
  absl::StatusOr<PutReceipt> PutWithReceipt(const std::string& queue,
                                            std::vector<v1::TaskSpec> tasks,
                                            const PutOptions& options = {});

  // --- consumers ---------------------------------------------------------
  // Returns 1..max_tasks deliveries as soon as at least one is ready.
  absl::StatusOr<std::vector<v1::Delivery>> Get(const std::string& queue,
                                                const GetOptions& options = {});
  // Settles a lease from Get(lease = true); `result` goes to reply_to.
  // FAILED_PRECONDITION if the lease was lost.
  absl::Status Complete(uint64_t task_id, uint64_t lease_id, const std::string& result);
  // Settles many leases at once, each as Complete with an empty result: a
  // reader acknowledging the result messages it has processed. Leases no
  // longer held are skipped. Returns how many were settled. At most
  // kMaxTasksPerGet leases.
  absl::StatusOr<uint32_t> Ack(const std::vector<v1::LeaseRef>& leases);
  // permanent = give up now (FAILED result to reply_to); otherwise retry.
  absl::Status Fail(uint64_t task_id, uint64_t lease_id, const std::string& error,
                    bool permanent = false);
  // Gives a lease back without counting a failure (nack); the task is
  // ready again after `delay`. FAILED_PRECONDITION if the lease was lost.
  absl::Status Release(uint64_t task_id, uint64_t lease_id,
                       absl::Duration delay = absl::ZeroDuration());
  // Marks `count` tasks taken with manual_task_done as done.
  absl::Status TaskDone(const std::string& queue, uint32_t count = 1);
  // Waits until every task put on the queue is done; DEADLINE_EXCEEDED
  // after `timeout`. Infinite = forever.
  absl::Status Join(const std::string& queue, absl::Duration timeout = absl::InfiniteDuration(),
                    CallCanceller* canceller = nullptr);

  // --- cluster (docs/CLUSTER.md) --------------------------------------------
  // The masters, their node numbers and queue placements. From a single
  // master (or one too old to know the call): clustered = false.
  absl::StatusOr<v1::GetClusterResponse> GetCluster();
  // Moves a queue (with the queues tied to it) to another master; sent to
  // its owner, which answers once the move is done (admin only).
  absl::StatusOr<v1::MoveQueueResponse> MoveQueue(const v1::MoveQueueRequest& request);
  // Master to master, during a move: sent to this client's master only.
  absl::Status AdoptQueues(const v1::AdoptQueuesRequest& request);

  // Another client over the same channel and token with other options
  // (e.g. a short call_timeout for a cleanup call).
  std::unique_ptr<Client> WithOptions(ClientOptions client_options) const;
  // Another client whose calls go first to the master at `address` (its
  // admin calls — ListQueues, ListWorkers... — go only there), sharing
  // this one's channels, token, options and cluster map.
  std::unique_ptr<Client> At(const std::string& address) const;
  // The address calls go to first ("" for a client made over a channel
  // without one).
  const std::string& address() const { return home_; }

  // The generated stub, for what this class does not wrap (the Work stream).
  // Remember to add the token: PrepareContext(&context, token()).
  v1::TaskQueue::Stub* stub() { return routing_->pool.At(home_).stub.get(); }
  const std::string& token() const { return token_; }

 private:
  // What the channels and the cluster map of clients made by WithOptions
  // and At share.
  struct Routing {
    Routing(std::string home, std::shared_ptr<grpc::Channel> channel, ChannelFactory dial)
        : pool(std::move(home), std::move(channel), std::move(dial)) {}
    ChannelPool pool;
    ClusterMap map;
  };
  // Which master a call is for: a queue's owner, the master that made a
  // task, or (neither set) the one this client was given.
  struct Route {
    std::string queue = {};
    uint64_t task_id = 0;
  };
  using Rpc = std::function<grpc::Status(v1::TaskQueue::Stub*, grpc::ClientContext*)>;

  Client(std::shared_ptr<Routing> routing, std::string home, std::string token,
         ClientOptions client_options);

  // Runs `rpc` on the stub of the master `route` leads to (following
  // redirects), with a fresh context carrying the token and the time left
  // of `deadline_in` (infinite = none), registered with `canceller` if
  // given; through UNAVAILABLE sends it again as `retry` allows.
  absl::Status Call(const Rpc& rpc, const Route& route, absl::Duration deadline_in,
                    CallCanceller* canceller, Retry retry = Retry::kIfNotSent);
  // One try of Call: to where `route` leads now, then along at most
  // kMaxRedirects redirects. `address` = where the last request went.
  absl::Status Attempt(const Rpc& rpc, const Route& route, absl::Time deadline,
                       CallCanceller* canceller, std::string* address);
  // The address to try first for `route` ("" = home).
  std::string Resolve(const Route& route);
  void Learn(const Route& route, const std::string& address);
  void Forget(const Route& route);
  // Waits up to `pause` before a retry while asking gRPC to connect; ends
  // early once connected. False if `canceller` cancelled.
  bool PauseBeforeRetry(grpc::Channel& channel, absl::Duration pause, CallCanceller* canceller);
  // After "master is shutting down": waits (up to 10 s, or `deadline`)
  // until the connection to the stopping master is gone. False if cancelled.
  bool WaitForMasterToGo(grpc::Channel& channel, absl::Time deadline, CallCanceller* canceller);
  // Deadline for a call that waits up to `timeout` on the master.
  absl::Duration WaitingDeadline(bool nowait, absl::Duration timeout) const;

  const std::shared_ptr<Routing> routing_;
  const std::string home_;
  const std::string token_;
  const ClientOptions options_;
  Reachability reachability_;
};

// Most redirects one call follows (a map in flux could otherwise bounce it).
inline constexpr int kMaxRedirects = 3;

// "_results.<16 random hex digits>": a fresh name for a private queue that
// receives the results of one submission.
std::string RandomResultQueueName();

// Gives every task without a dedup_key the key "<kind>.<16 random hex
// digits>:<index>" (one random part per call), so that a Put sent again
// after a lost reply stores each task once, and the client may retry it
// (Retry::kAlways). Tasks with a key of their own keep it.
void AddRetryDedupKeys(std::vector<v1::TaskSpec>& tasks, absl::string_view kind);

// The most tasks one Put request to `queue` may carry: kMaxTasksPerPut, or
// the queue's maxsize when it is smaller (a request larger than maxsize
// could never fit). `limit` caps it further (0 = no cap). Unknown queue
// (it will be auto-created) or any error: the limit alone.
size_t PutBatchLimit(Client& client, const std::string& queue, size_t limit = 0);

}  // namespace taskq
