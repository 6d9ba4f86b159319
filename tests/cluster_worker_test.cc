// One taskq-worker serving queues on three masters of a cluster (issue 18,
// docs/CLUSTER.md "Workers"): a real etcd and three taskq-master processes
// on 127.0.0.1 sharing one --token-file, queues placed on different masters
// (CreateQueueRequest.on), and ONE worker given all queues and the address
// of one master. It holds one Work stream per master, each naming only that
// master's queues; a master killed with SIGKILL stops only its own queues,
// whose tasks complete exactly once after it restarts on its data dir; a
// SIGTERM drains the streams to every master.
#include <signal.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

struct MasterProc {
  std::string name;
  std::string address;  // 127.0.0.1:PORT, --listen and --advertise
  std::unique_ptr<Process> process;
  std::unique_ptr<v1::TaskQueue::Stub> stub;
  int starts = 0;
};

class ClusterWorkerTest : public EtcdTest {
 protected:
  void SetUp() override {
    EtcdTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (int i = 1; i <= 3; ++i) {
      masters_.push_back(MasterProc{absl::StrCat("m", i), "", nullptr, nullptr, 0});
      ASSERT_TRUE(StartMaster(masters_.back()).ok());
    }
    // Every master sees the three up before the test places queues.
    for (auto& m : masters_) {
      ASSERT_TRUE(WaitFor([&] { return UpCount(m) == 3; }, absl::Seconds(20)))
          << m.name << " does not see 3 masters up";
    }
  }

  int UpCount(MasterProc& m) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(5));
    v1::GetClusterResponse resp;
    if (!m.stub->GetCluster(&ctx, v1::GetClusterRequest(), &resp).ok()) return -1;
    int up = 0;
    for (const auto& master : resp.masters()) up += master.up() ? 1 : 0;
    return up;
  }

  void TearDown() override {
    for (auto& w : workers_) {
      if (w->Running()) w->Stop(absl::Seconds(10));
    }
    for (auto& m : masters_) {
      if (m.process && m.process->Running()) m.process->Stop(absl::Seconds(10));
      if (HasFailure() && m.process) {
        std::cerr << "---- " << m.name << " stderr:\n" << m.process->Stderr() << "\n";
      }
    }
    for (auto& w : workers_) {
      if (HasFailure()) std::cerr << "---- worker stderr:\n" << w->Stderr() << "\n";
    }
  }

  // Starts (or restarts, on the same address and data dir) one master.
  absl::Status StartMaster(MasterProc& m) {
    absl::Status last = absl::InternalError("not started");
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (m.address.empty() || (attempt > 0 && m.starts == 0)) {
        m.address = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
      }
      const std::string port_file = absl::StrCat(cluster_.dir(), "/", m.name, ".port");
      std::remove(port_file.c_str());
      m.process = cluster_.Spawn(
          absl::StrCat(m.name, "-", m.starts),
          {BinPath("taskq-master"), "--listen", m.address, "--port-file", port_file,
           "--token-file", cluster_.token_file(), "--data-dir",
           absl::StrCat(cluster_.dir(), "/data-", m.name), "--cluster",
           absl::StrCat("etcd://", etcd_.endpoint()), "--advertise", m.address, "--name", m.name,
           "--cluster-ttl", "2s"});
      if (!m.process) return absl::InternalError("cannot spawn taskq-master");
      bool up = WaitFor(
          [&] {
            std::string s = ReadFile(port_file);
            return (!s.empty() && s.back() == '\n') || !m.process->Running();
          },
          absl::Seconds(30));
      if (up && m.process->Running()) {
        ++m.starts;
        auto connection = Connection(m.address);
        if (!connection.ok()) return connection.status();
        m.stub = v1::TaskQueue::NewStub(connection->channel);
        return absl::OkStatus();
      }
      last = absl::InternalError(absl::StrCat(m.name, " did not start: ", m.process->Stderr()));
      // The port may still be held by the killed master's socket: retry.
      absl::SleepFor(absl::Milliseconds(200));  // backoff between start attempts, not a sync
    }
    return last;
  }

  absl::StatusOr<taskq::Connection> Connection(const std::string& address) {
    ConnectOptions o;
    o.master = address;
    o.token_file = cluster_.token_file();
    return Connect(o);
  }

  std::string Token() {
    return std::string(absl::StripAsciiWhitespace(ReadFile(cluster_.token_file())));
  }

  grpc::Status CreateQueue(MasterProc& at, const std::string& queue, const std::string& on) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(20));
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name(queue);
    req.set_exist_ok(true);
    req.set_on(on);
    v1::CreateQueueResponse resp;
    return at.stub->CreateQueue(&ctx, req, &resp);
  }

  // Puts `n` square tasks on `queue` at its owner, results to `reply_to`.
  std::vector<uint64_t> Put(MasterProc& owner, const std::string& queue, int n,
                            const std::string& reply_to, const std::string& handler = "square",
                            const std::string& payload = "3") {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(20));
    v1::PutRequest req;
    req.set_queue(queue);
    for (int i = 0; i < n; ++i) {
      auto* t = req.add_tasks();
      t->set_handler(handler);
      t->set_payload(payload);
      t->set_reply_to(reply_to);
    }
    v1::PutResponse resp;
    grpc::Status s = owner.stub->Put(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << owner.name << " put " << queue << ": " << s.error_message();
    return {resp.ids().begin(), resp.ids().end()};
  }

  // Ready results on `queue` at its owner (-1 if it cannot be asked).
  long Ready(MasterProc& owner, const std::string& queue) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(5));
    v1::GetQueueStatsRequest req;
    req.set_queue(queue);
    v1::QueueStats stats;
    grpc::Status s = owner.stub->GetQueueStats(&ctx, req, &stats);
    return s.ok() ? static_cast<long>(stats.ready()) : -1;
  }

  // Takes every result on `queue`: task id -> how many results it has.
  std::map<uint64_t, int> TakeResults(MasterProc& owner, const std::string& queue) {
    std::map<uint64_t, int> seen;
    for (;;) {
      grpc::ClientContext ctx;
      PrepareContext(&ctx, Token(), absl::Seconds(10));
      v1::GetRequest req;
      req.set_queue(queue);
      req.set_max_tasks(1000);
      req.set_nowait(true);
      v1::GetResponse resp;
      grpc::Status s = owner.stub->Get(&ctx, req, &resp);
      if (!s.ok() || resp.deliveries_size() == 0) break;
      for (const auto& d : resp.deliveries()) {
        const v1::Task& t = d.task();
        EXPECT_EQ(t.outcome(), v1::OUTCOME_OK) << t.error();
        ++seen[t.result_of()];
      }
    }
    return seen;
  }

  // The workers `at` lists: worker id -> its queues (sorted), one entry per stream.
  std::vector<std::pair<std::string, std::vector<std::string>>> Workers(MasterProc& at) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(5));
    v1::ListWorkersRequest req;
    v1::ListWorkersResponse resp;
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    if (!at.stub->ListWorkers(&ctx, req, &resp).ok()) return out;
    for (const auto& w : resp.workers()) {
      std::vector<std::string> q(w.queues().begin(), w.queues().end());
      std::sort(q.begin(), q.end());
      out.emplace_back(w.worker_id(), q);
    }
    return out;
  }

  Process* StartWorker(const std::string& seed, std::vector<std::string> queues,
                       std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {BinPath("taskq-worker"), "--master", seed, "--token-file",
                                     cluster_.token_file(), "--id", "w1", "--concurrency", "4",
                                     "--log-level", "debug"};
    for (const auto& q : queues) {
      argv.push_back("--queue");
      argv.push_back(q);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_.push_back(cluster_.Spawn("worker", argv));
    return workers_.back().get();
  }

  // Creates q1..q3 on m1..m3 (results r1..r3 with them).
  void PlaceQueues() {
    for (int i = 0; i < 3; ++i) {
      const std::string n = absl::StrCat(i + 1);
      // Asked at m1 every time: a create for another master is placed there.
      grpc::Status s = CreateQueue(masters_[0], "q" + n, masters_[i].name);
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        s = CreateQueue(masters_[i], "q" + n, masters_[i].name);  // follow the redirect
      }
      ASSERT_TRUE(s.ok()) << "q" << n << ": " << s.error_message();
      s = CreateQueue(masters_[i], "r" + n, masters_[i].name);
      ASSERT_TRUE(s.ok()) << "r" << n << ": " << s.error_message();
    }
  }

  Cluster cluster_;  // temp dir, token file, Spawn
  std::vector<MasterProc> masters_;
  std::vector<std::unique_ptr<Process>> workers_;
};

TEST_F(ClusterWorkerTest, OneWorkerServesQueuesOnThreeMastersAndSurvivesOneDying) {
  PlaceQueues();
  if (HasFatalFailure()) return;
  constexpr int kTasks = 20;
  std::vector<std::vector<uint64_t>> ids(3);
  for (int i = 0; i < 3; ++i) {
    ids[i] = Put(masters_[i], absl::StrCat("q", i + 1), kTasks, absl::StrCat("r", i + 1));
  }
  // The worker is given the address of m2 only, and all the queues.
  Process* worker = StartWorker(masters_[1].address, {"q1", "q2", "q3"});
  ASSERT_NE(worker, nullptr);
  for (int i = 0; i < 3; ++i) {
    const std::string r = absl::StrCat("r", i + 1);
    ASSERT_TRUE(WaitFor([&] { return Ready(masters_[i], r) == kTasks; }, absl::Seconds(60)))
        << r << " at " << masters_[i].name << ": " << Ready(masters_[i], r);
  }
  // Each master lists the worker once, with its own queue only.
  for (int i = 0; i < 3; ++i) {
    auto listed = Workers(masters_[i]);
    ASSERT_EQ(listed.size(), 1u) << masters_[i].name;
    EXPECT_EQ(listed[0].first, "w1");
    EXPECT_EQ(listed[0].second, (std::vector<std::string>{absl::StrCat("q", i + 1)}));
  }
  // Slow tasks on q3, then kill -9 m3 while the worker runs some of them.
  std::vector<uint64_t> q3_slow = Put(masters_[2], "q3", kTasks, "r3", "sleep", "0.2");
  ASSERT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        PrepareContext(&ctx, Token(), absl::Seconds(5));
        v1::ListWorkersResponse resp;
        if (!masters_[2].stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp).ok()) {
          return false;
        }
        return resp.workers_size() == 1 && resp.workers(0).running() > 0;
      },
      absl::Seconds(30)));
  masters_[2].process->Kill(SIGKILL);
  ASSERT_TRUE(masters_[2].process->Wait(absl::Seconds(10)).has_value());
  // The worker keeps completing the other masters' tasks meanwhile.
  Put(masters_[0], "q1", kTasks, "r1");
  Put(masters_[1], "q2", kTasks, "r2");
  for (int i = 0; i < 2; ++i) {
    const std::string r = absl::StrCat("r", i + 1);
    ASSERT_TRUE(WaitFor([&] { return Ready(masters_[i], r) == 2 * kTasks; }, absl::Seconds(60)))
        << r << ": " << Ready(masters_[i], r);
  }
  EXPECT_TRUE(worker->Running());
  // m3 restarts on its data dir and address: q3's tasks complete too,
  // exactly once (one result per task).
  ASSERT_TRUE(StartMaster(masters_[2]).ok());
  ASSERT_TRUE(WaitFor([&] { return Ready(masters_[2], "r3") == 2 * kTasks; }, absl::Seconds(60)))
      << Ready(masters_[2], "r3");
  std::map<uint64_t, int> r3 = TakeResults(masters_[2], "r3");
  EXPECT_EQ(r3.size(), static_cast<size_t>(2 * kTasks));
  for (uint64_t id : ids[2]) EXPECT_EQ(r3[id], 1) << "task " << id;
  for (uint64_t id : q3_slow) EXPECT_EQ(r3[id], 1) << "task " << id;
  for (int i = 0; i < 2; ++i) {
    std::map<uint64_t, int> r = TakeResults(masters_[i], absl::StrCat("r", i + 1));
    EXPECT_EQ(r.size(), static_cast<size_t>(2 * kTasks));
    for (uint64_t id : ids[i]) EXPECT_EQ(r[id], 1) << "task " << id;
  }
  // Its stream to m3 is back, naming q3 only.
  ASSERT_TRUE(WaitFor([&] { return Workers(masters_[2]).size() == 1; }, absl::Seconds(20)));
  EXPECT_EQ(Workers(masters_[2])[0].second, (std::vector<std::string>{"q3"}));
  EXPECT_TRUE(worker->Running());
}

TEST_F(ClusterWorkerTest, SigtermDrainsTheStreamsToEveryMaster) {
  PlaceQueues();
  if (HasFatalFailure()) return;
  // Tasks that take a while, on two masters.
  Put(masters_[0], "q1", 2, "r1", "sleep", "1.5");
  Put(masters_[2], "q3", 2, "r3", "sleep", "1.5");
  Process* worker = StartWorker(masters_[0].address, {"q1", "q3"}, {"--drain-timeout", "30"});
  ASSERT_NE(worker, nullptr);
  auto running = [&](MasterProc& m) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, Token(), absl::Seconds(5));
    v1::ListWorkersResponse resp;
    if (!m.stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp).ok()) return 0u;
    uint32_t n = 0;
    for (const auto& w : resp.workers()) n += w.running();
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return running(masters_[0]) == 2 && running(masters_[2]) == 2; },
                      absl::Seconds(30)));
  // Leased is not yet started: a drain gives back what has not started.
  // Its debug log says when each one starts.
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string log = worker->Stderr();
        size_t started = 0;
        for (size_t at = log.find("task started"); at != std::string::npos;
             at = log.find("task started", at + 1)) {
          ++started;
        }
        return started == 4;
      },
      absl::Seconds(30)));
  worker->Kill(SIGTERM);
  auto exit = worker->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(*exit, 0);
  // The running tasks finished and were reported on both masters (each
  // stores the last results as it ends the stream).
  EXPECT_TRUE(WaitFor([&] { return Ready(masters_[0], "r1") == 2; }, absl::Seconds(10)))
      << Ready(masters_[0], "r1");
  EXPECT_TRUE(WaitFor([&] { return Ready(masters_[2], "r3") == 2; }, absl::Seconds(10)))
      << Ready(masters_[2], "r3");
  EXPECT_TRUE(WaitFor([&] { return Workers(masters_[0]).empty(); }, absl::Seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return Workers(masters_[2]).empty(); }, absl::Seconds(10)));
}

}  // namespace
}  // namespace taskq::testing
