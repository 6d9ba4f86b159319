// Unit tests of the worker in cluster mode: the grouping of queues by
// owner (cluster_routes) and a Worker against two in-process fake masters
// of one cluster (GetCluster, Start refused with redirects or owner-down,
// deliveries and completions per stream, drain over both streams).
#include "worker/cluster_routes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/cluster_redirect.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "worker/worker.h"

namespace taskq {
namespace {

v1::GetClusterResponse Map(std::vector<std::tuple<std::string, std::string, bool>> masters,
                           std::vector<std::pair<std::string, std::string>> placements) {
  v1::GetClusterResponse r;
  r.set_clustered(true);
  r.set_self(std::get<0>(masters.front()));
  for (const auto& [name, address, up] : masters) {
    auto* m = r.add_masters();
    m->set_name(name);
    m->set_address(address);
    m->set_up(up);
  }
  for (const auto& [queue, master] : placements) {
    auto* p = r.add_placements();
    p->set_queue(queue);
    p->set_master(master);
  }
  return r;
}

v1::QueueOwner Owner(std::string queue, std::string master, std::string address, bool down) {
  v1::QueueOwner o;
  o.set_queue(std::move(queue));
  o.set_master(std::move(master));
  o.set_address(std::move(address));
  o.set_down(down);
  return o;
}

TEST(GroupQueuesByOwnerTest, NotClusteredKeepsEveryQueueOnTheSeed) {
  v1::GetClusterResponse single;
  auto groups = GroupQueuesByOwner(single, {"a", "b"}, "seed:1");
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups.begin()->first, (WorkRoute{"seed:1", ""}));
  EXPECT_EQ(groups.begin()->second, (std::vector<std::string>{"a", "b"}));
}

TEST(GroupQueuesByOwnerTest, PlacedQueuesGoToTheirOwnerUnplacedToTheSeedDownOnesAreParked) {
  auto cluster = Map({{"m1", "h1:1", true}, {"m2", "h2:2", true}, {"m3", "h3:3", false}},
                     {{"a", "m1"}, {"b", "m2"}, {"c", "m3"}, {"d", "m2"}, {"other", "m2"}});
  auto groups = GroupQueuesByOwner(cluster, {"d", "a", "b", "c", "new"}, "h1:1");
  std::map<std::string, std::vector<std::string>> by_key;
  for (const auto& [route, queues] : groups) by_key[route.Key()] = queues;
  EXPECT_EQ(by_key, (std::map<std::string, std::vector<std::string>>{
                        {"h1:1", {"a", "new"}},
                        {"h2:2", {"d", "b"}},
                        {"h1:1#m3", {"c"}},
                    }));
}

TEST(GroupQueuesByOwnerTest, TheSeedsOwnQueuesUseTheSeedAddressNotTheAdvertisedOne) {
  auto cluster = Map({{"m1", "10.0.0.1:5000", true}, {"m2", "h2:2", true}}, {{"a", "m1"}, {"b", "m2"}});
  auto groups = GroupQueuesByOwner(cluster, {"a", "b"}, "localhost:5000");
  std::map<std::string, std::vector<std::string>> by_key;
  for (const auto& [route, queues] : groups) by_key[route.Key()] = queues;
  EXPECT_EQ(by_key, (std::map<std::string, std::vector<std::string>>{
                        {"localhost:5000", {"a"}}, {"h2:2", {"b"}}}));
}

TEST(RouteAfterRefusalTest, RedirectGoesToTheOwnerDownParksAtTheMasterThatAnswered) {
  const WorkRoute seed{"h1:1", ""};
  auto to = RouteAfterRefusal(RedirectStatus(Owner("q", "m2", "h2:2", false)), "q", seed);
  ASSERT_TRUE(to.has_value());
  EXPECT_EQ(*to, (WorkRoute{"h2:2", ""}));

  to = RouteAfterRefusal(RedirectStatus(Owner("q", "m2", "", true)), "q", seed);
  ASSERT_TRUE(to.has_value());
  EXPECT_EQ(*to, (WorkRoute{"h1:1", "m2"}));
  // Parked already for that owner: stay (retry with backoff).
  EXPECT_FALSE(RouteAfterRefusal(RedirectStatus(Owner("q", "m2", "", true)), "q", *to));
  // A redirect to where it is already, another queue, or no owner at all.
  EXPECT_FALSE(RouteAfterRefusal(RedirectStatus(Owner("q", "m1", "h1:1", false)), "q", seed));
  EXPECT_FALSE(RouteAfterRefusal(RedirectStatus(Owner("x", "m2", "h2:2", false)), "q", seed));
  EXPECT_FALSE(RouteAfterRefusal(absl::UnavailableError("connection refused"), "q", seed));
  EXPECT_EQ(RefusedQueue(RedirectStatus(Owner("x", "m2", "h2:2", false))), "x");
  EXPECT_EQ(RefusedQueue(absl::UnavailableError("no")), "");
}

constexpr char kToken[] = "cluster-test-token-0123456789";

// One master of a fake cluster: answers GetCluster with a shared map and
// serves Work streams naming only queues it owns; a stream naming another
// queue is refused as a real master refuses it (redirect or owner down).
// Each owned queue has tasks waiting; completions are recorded.
class FakeClusterMaster final : public v1::TaskQueue::Service {
 public:
  explicit FakeClusterMaster(std::string name) : name_(std::move(name)) {}

  void Listen() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    // Accept the worker's keepalive pings as a real master does.
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  void Shutdown() {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  }
  const std::string& address() const { return address_; }
  const std::string& name() const { return name_; }

  // queue -> owner (name, address, up) as every master sees it.
  struct Placement {
    std::string master;
    std::string address;
    bool up = true;
  };
  void SetPlacements(std::map<std::string, Placement> p) {
    MutexLock lock(&mu_);
    placements_ = std::move(p);
  }
  // Placements GetCluster does not show yet (placed at first use).
  void HideFromMap(std::set<std::string> queues) {
    MutexLock lock(&mu_);
    hidden_ = std::move(queues);
  }
  void AddTasks(const std::string& queue, int n, const std::string& handler = "square",
                const std::string& payload = "7") {
    MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) {
      v1::Delivery d;
      d.mutable_task()->set_id(++next_task_);
      d.mutable_task()->set_queue(queue);
      d.mutable_task()->set_handler(handler);
      d.mutable_task()->set_payload(payload);
      d.mutable_task()->set_attempt(1);
      d.set_lease_ms_left(30000);
      pending_.push_back(std::move(d));
    }
  }
  int completed() {
    MutexLock lock(&mu_);
    return static_cast<int>(completions_.size());
  }
  std::vector<std::vector<std::string>> starts() {
    MutexLock lock(&mu_);
    return starts_;
  }
  // The queues of the streams open now. A stream's handler may end a few
  // milliseconds after the worker's next stream started, so each stream
  // owns its own entry.
  std::vector<std::string> live_queues() {
    MutexLock lock(&mu_);
    std::vector<std::string> all;
    for (const auto& [stream, queues] : live_queues_) {
      all.insert(all.end(), queues.begin(), queues.end());
    }
    return all;
  }
  int refusals() {
    MutexLock lock(&mu_);
    return refusals_;
  }
  int half_closed() {
    MutexLock lock(&mu_);
    return half_closed_;
  }

  grpc::Status GetCluster(grpc::ServerContext*, const v1::GetClusterRequest*,
                          v1::GetClusterResponse* response) override {
    MutexLock lock(&mu_);
    response->set_clustered(true);
    response->set_self(name_);
    std::map<std::string, std::pair<std::string, bool>> masters;
    for (const auto& [queue, p] : placements_) {
      masters[p.master] = {p.address, p.up};
      if (hidden_.contains(queue)) continue;
      auto* placement = response->add_placements();
      placement->set_queue(queue);
      placement->set_master(p.master);
    }
    for (const auto& [name, m] : masters) {
      auto* master = response->add_masters();
      master->set_name(name);
      master->set_address(m.first);
      master->set_up(m.second);
    }
    return grpc::Status::OK;
  }

  grpc::Status Work(grpc::ServerContext* context,
                    grpc::ServerReaderWriter<v1::WorkResponse, v1::WorkRequest>* stream) override {
    v1::WorkRequest first;
    if (!stream->Read(&first) || !first.has_start()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no start");
    }
    std::vector<std::string> queues(first.start().queues().begin(),
                                    first.start().queues().end());
    int stream_number = 0;
    {
      MutexLock lock(&mu_);
      for (const std::string& q : queues) {
        const Placement& p = placements_[q];
        if (p.master == name_) continue;
        ++refusals_;
        v1::QueueOwner owner;
        owner.set_queue(q);
        owner.set_master(p.master);
        if (p.up) owner.set_address(p.address);
        owner.set_down(!p.up);
        return ToGrpcStatus(RedirectStatus(owner));
      }
      starts_.push_back(queues);
      stream_number = ++streams_started_;
      live_queues_[stream_number] = queues;
      credits_ = first.credits();
    }
    std::atomic<bool> reader_done{false};
    // This stream's deliveries not reported yet, by lease: back to pending
    // when released or when the stream ends, as a master takes leases back.
    std::map<uint64_t, v1::Delivery> leased;  // guarded by mu_
    std::thread reader([&] {
      v1::WorkRequest request;
      while (stream->Read(&request)) {
        MutexLock lock(&mu_);
        credits_ += request.credits();
        for (const auto& r : request.releases()) {
          if (auto it = leased.find(r.lease_id()); it != leased.end()) {
            pending_.push_back(std::move(it->second));
            leased.erase(it);
          }
        }
        for (const auto& c : request.completions()) {
          leased.erase(c.lease_id());
          completions_.push_back(c);
          v1::WorkResponse::Ack ack;
          ack.set_task_id(c.task_id());
          ack.set_lease_id(c.lease_id());
          acks_.push_back(ack);
        }
      }
      MutexLock lock(&mu_);
      ++half_closed_;
      reader_done = true;
    });
    for (;;) {
      v1::WorkResponse response;
      {
        MutexLock lock(&mu_);
        for (auto it = pending_.begin(); it != pending_.end() && credits_ > 0;) {
          if (std::find(queues.begin(), queues.end(), it->task().queue()) == queues.end()) {
            ++it;
            continue;
          }
          it->set_lease_id(++next_lease_);
          leased[it->lease_id()] = *it;
          *response.add_deliveries() = std::move(*it);
          it = pending_.erase(it);
          --credits_;
        }
        for (auto& ack : acks_) *response.add_acks() = std::move(ack);
        acks_.clear();
      }
      if (reader_done || context->IsCancelled()) break;
      if (response.deliveries_size() + response.acks_size() > 0) {
        if (!stream->Write(response)) break;
      } else {
        absl::SleepFor(absl::Milliseconds(5));  // a fake's poll loop, not a test wait
      }
    }
    context->TryCancel();
    reader.join();
    MutexLock lock(&mu_);
    for (auto& [lease, d] : leased) pending_.push_back(std::move(d));
    live_queues_.erase(stream_number);
    return grpc::Status::OK;
  }

 private:
  const std::string name_;
  std::string address_;
  std::unique_ptr<grpc::Server> server_;
  Mutex mu_;
  std::map<std::string, Placement> placements_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> hidden_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Delivery> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WorkRequest::Completion> completions_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WorkResponse::Ack> acks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> starts_ ABSL_GUARDED_BY(mu_);
  int streams_started_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int, std::vector<std::string>> live_queues_ ABSL_GUARDED_BY(mu_);
  uint64_t next_task_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_lease_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t credits_ ABSL_GUARDED_BY(mu_) = 0;
  int refusals_ ABSL_GUARDED_BY(mu_) = 0;
  int half_closed_ ABSL_GUARDED_BY(mu_) = 0;
};

bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));  // polling a condition, with a deadline
  }
  return true;
}

class ClusterWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("cluster_routes_test", LogLevel::kInfo);
    char dir_template[] = "/tmp/taskq-cluster-worker-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    token_file_ = dir_ + "/token";
    {
      std::ofstream out(token_file_);
      out << kToken << "\n";
    }
    ::chmod(token_file_.c_str(), 0600);
    m1_.Listen();
    m2_.Listen();
  }
  void TearDown() override {
    if (worker_ != nullptr) worker_->StopNow();
    if (run_.joinable()) run_.join();
    worker_.reset();
    m1_.Shutdown();
    m2_.Shutdown();
    std::remove(token_file_.c_str());
    ::rmdir(dir_.c_str());
  }
  void Place(std::map<std::string, FakeClusterMaster::Placement> p) {
    m1_.SetPlacements(p);
    m2_.SetPlacements(p);
  }
  void StartWorker(std::vector<std::string> queues, int concurrency = 2) {
    WorkerOptions o;
    o.connect.master = m1_.address();
    o.connect.token_file = token_file_;
    o.queues = std::move(queues);
    o.threads = 2;
    o.concurrency = concurrency;
    o.id = "w-cluster";
    o.drain_timeout = absl::Seconds(20);
    worker_ = std::make_unique<Worker>(o);
    run_ = std::thread([this] { run_status_ = worker_->Run(); });
  }

  std::string dir_, token_file_;
  FakeClusterMaster m1_{"m1"}, m2_{"m2"};
  std::unique_ptr<Worker> worker_;
  std::thread run_;
  absl::Status run_status_;
};

TEST_F(ClusterWorkerTest, OneStreamPerMasterNamingOnlyItsQueues) {
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address()}}, {"c", {"m2", m2_.address()}}});
  for (const char* q : {"a"}) m1_.AddTasks(q, 5);
  for (const char* q : {"b", "c"}) m2_.AddTasks(q, 5);
  StartWorker({"a", "b", "c"});
  ASSERT_TRUE(Eventually([&] { return m1_.completed() == 5 && m2_.completed() == 10; }))
      << m1_.completed() << " " << m2_.completed();
  EXPECT_EQ(m1_.live_queues(), (std::vector<std::string>{"a"}));
  EXPECT_EQ(m2_.live_queues(), (std::vector<std::string>{"b", "c"}));
  // Grouped from the map: no stream was refused.
  EXPECT_EQ(m1_.refusals() + m2_.refusals(), 0);
}

TEST_F(ClusterWorkerTest, QueueNotInTheMapFollowsTheRedirectToItsOwner) {
  // "n" is placed at first use (the seed places it on m2 and redirects).
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address()}}, {"n", {"m2", m2_.address()}}});
  m1_.HideFromMap({"n"});
  m1_.AddTasks("a", 3);
  m2_.AddTasks("b", 3);
  m2_.AddTasks("n", 3);
  StartWorker({"a", "b", "n"});
  ASSERT_TRUE(Eventually([&] { return m1_.completed() == 3 && m2_.completed() == 6; }))
      << m1_.completed() << " " << m2_.completed();
  ASSERT_TRUE(Eventually([&] { return m2_.live_queues().size() == 2; }));
  std::vector<std::string> on_m2 = m2_.live_queues();
  std::sort(on_m2.begin(), on_m2.end());
  EXPECT_EQ(on_m2, (std::vector<std::string>{"b", "n"}));
  EXPECT_EQ(m1_.live_queues(), (std::vector<std::string>{"a"}));
  EXPECT_GE(m1_.refusals(), 1);
}

TEST_F(ClusterWorkerTest, QueueOfADownOwnerWaitsWhileTheOthersRunThenComesBack) {
  // m2 is down: "b" is parked; "a" on m1 runs meanwhile.
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address(), false}}});
  m1_.AddTasks("a", 4);
  m2_.AddTasks("b", 4);
  StartWorker({"a", "b"});
  ASSERT_TRUE(Eventually([&] { return m1_.completed() == 4; }));
  EXPECT_EQ(m2_.completed(), 0);
  EXPECT_EQ(m1_.live_queues(), (std::vector<std::string>{"a"}));
  ASSERT_TRUE(Eventually([&] { return m1_.refusals() >= 1; }));
  // m2 is back: the parked stream is redirected to it.
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address(), true}}});
  ASSERT_TRUE(Eventually([&] { return m2_.completed() == 4; }));
  EXPECT_EQ(m2_.live_queues(), (std::vector<std::string>{"b"}));
}

TEST_F(ClusterWorkerTest, MasterBackOnAnotherAddressIsFoundThroughTheMasterGiven) {
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address()}}});
  m2_.AddTasks("b", 2);
  StartWorker({"a", "b"});
  ASSERT_TRUE(Eventually([&] { return m2_.completed() == 2; }));
  // m2 dies; the map says so.
  m2_.Shutdown();
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", "", false}}});
  m1_.AddTasks("a", 2);
  ASSERT_TRUE(Eventually([&] { return m1_.completed() == 2; }));
  // It comes back on another address (m3 plays it).
  FakeClusterMaster m2_again{"m2"};
  m2_again.Listen();
  const std::map<std::string, FakeClusterMaster::Placement> back = {
      {"a", {"m1", m1_.address()}}, {"b", {"m2", m2_again.address()}}};
  m1_.SetPlacements(back);
  m2_again.SetPlacements(back);
  m2_again.AddTasks("b", 3);
  ASSERT_TRUE(Eventually([&] { return m2_again.completed() == 3; }));
  EXPECT_EQ(m2_again.live_queues(), (std::vector<std::string>{"b"}));
  worker_->StopNow();
  run_.join();
  m2_again.Shutdown();
}

TEST_F(ClusterWorkerTest, ConcurrencyIsSharedAndStopDrainsEveryStream) {
  Place({{"a", {"m1", m1_.address()}}, {"b", {"m2", m2_.address()}}});
  m1_.AddTasks("a", 2, "sleep", "2");
  m2_.AddTasks("b", 2, "sleep", "2");
  StartWorker({"a", "b"}, /*concurrency=*/2);
  // Each stream holds up to 2 deliveries; only 2 run at once in all.
  ASSERT_TRUE(Eventually([&] { return worker_->tasks_in_flight() == 4; }));
  auto running = [&] {
    const std::string text = worker_->metrics().Render();
    const std::string key = "\ntaskq_worker_tasks_running ";
    const size_t at = text.find(key);
    return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + key.size());
  };
  ASSERT_TRUE(Eventually([&] { return running() == 2; }));
  EXPECT_EQ(worker_->tasks_in_flight(), 4u);
  worker_->Stop();
  run_.join();
  EXPECT_TRUE(run_status_.ok()) << run_status_;
  // Running tasks finished and were reported, waiting ones were released;
  // both streams were closed by the worker (drained), none cut.
  EXPECT_GE(m1_.completed() + m2_.completed(), 2);
  EXPECT_EQ(m1_.half_closed(), 1);
  EXPECT_EQ(m2_.half_closed(), 1);
  EXPECT_EQ(worker_->tasks_in_flight(), 0u);
}

}  // namespace
}  // namespace taskq
