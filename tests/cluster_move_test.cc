// Moving a queue between masters (issue 18, docs/CLUSTER.md "Moving a
// queue"): two masters and a real etcd on 127.0.0.1 sharing one token.
// `taskq queue move` hands a queue to the other master with the queues tied
// to it (dead letters, results) and everything they hold: ready, delayed
// and dead tasks keep their ids, dedup keys and order; calls by id and by
// queue reach the new owner through either master; the old owner, restarted,
// does not serve its old copy. Under load — a producer putting and a worker
// computing while the queue moves — every task gives exactly one result.
#include <signal.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/client.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

constexpr int kMasters = 2;
const char* const kNames[kMasters] = {"m1", "m2"};

class ClusterMoveTest : public EtcdTest {
 protected:
  void SetUp() override {
    EtcdTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    absl::Status s = StartClusterMasters(absl::MakeSpan(m_), etcd_, {kNames, kNames + kMasters},
                                         {"--cluster-ttl", "2s"});
    ASSERT_TRUE(s.ok()) << s;
  }

  // A library client given master i's address (it follows redirects).
  std::unique_ptr<Client> ClientOf(int i) {
    return m_[i].NewClient({.call_timeout = absl::Seconds(20)});
  }

  // Creates `queue` on master `on` through master 0 (a plain queue).
  void CreateOn(const std::string& queue, const std::string& on) {
    v1::QueueConfig config;
    config.set_name(queue);
    auto created = ClientOf(0)->CreateQueue(config, false, on);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  // Who owns `queue` as master i sees it ("" if not placed).
  std::string OwnerOf(int i, const std::string& queue) {
    auto cluster = ClientOf(i)->GetCluster();
    if (!cluster.ok()) return "?";
    for (const auto& p : cluster->placements()) {
      if (p.queue() == queue) return p.master();
    }
    return "";
  }

  // Takes every result on `queue`: task id -> how many results it has.
  std::map<uint64_t, int> TakeResults(Client& client, const std::string& queue) {
    std::map<uint64_t, int> seen;
    for (;;) {
      auto got = client.Get(queue, {.max_tasks = 1000, .nowait = true});
      if (!got.ok() || got->empty()) break;
      for (const v1::Delivery& d : *got) ++seen[d.task().result_of()];
    }
    return seen;
  }

  taskq::testing::Cluster m_[kMasters];
};

v1::TaskSpec Spec(const std::string& payload, const std::string& reply_to = "",
                  const std::string& dedup = "", uint32_t delay_ms = 0) {
  v1::TaskSpec t;
  t.set_payload(payload);
  t.set_reply_to(reply_to);
  t.set_dedup_key(dedup);
  t.set_delay_ms(delay_ms);
  return t;
}

TEST_F(ClusterMoveTest, AQueueMovesWithItsTiedQueuesAndEverythingTheyHold) {
  auto at1 = ClientOf(0);
  ASSERT_NE(at1, nullptr);
  v1::QueueConfig config;
  config.set_name("jobs");
  config.set_dead_letter("jobs.dead");
  config.set_max_attempts(1);
  ASSERT_TRUE(at1->CreateQueue(config, false, "m1").ok());
  // Ready (one with a dedup key), delayed, and one that dies.
  auto ready = at1->Put("jobs", {Spec("a", "jobs.results", "key-a"), Spec("b", "jobs.results"),
                                 Spec("c", "jobs.results")});
  ASSERT_TRUE(ready.ok()) << ready.status();
  auto delayed = at1->Put("jobs", {Spec("later", "jobs.results", "", 3600 * 1000)});
  ASSERT_TRUE(delayed.ok()) << delayed.status();
  auto doomed = at1->Put("jobs", {Spec("doomed", "jobs.results")});
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  // Leased in order: a, b, c, then doomed: lease all four, give three back.
  auto leased = at1->Get("jobs", {.max_tasks = 4, .nowait = true, .lease = true});
  ASSERT_TRUE(leased.ok()) << leased.status();
  ASSERT_EQ(leased->size(), 4u);
  for (const v1::Delivery& d : *leased) {
    if (d.task().id() == (*doomed)[0]) {
      ASSERT_TRUE(at1->Fail(d.task().id(), d.lease_id(), "boom", /*permanent=*/true).ok());
    } else {
      ASSERT_TRUE(at1->Release(d.task().id(), d.lease_id()).ok());
    }
  }
  ASSERT_EQ(OwnerOf(0, "jobs.results"), "m1");

  // Asked of m2, which does not own it: the CLI is sent to m1, which moves.
  CliResult moved = m_[1].Cli({"queue", "move", "jobs", "--to", "m2", "--json"});
  ASSERT_EQ(moved.exit_code, 0) << Describe(moved);
  EXPECT_EQ(m_[1].PyJson(moved.out, "sorted(d['queues'])"),
            R"(["jobs", "jobs.dead", "jobs.results"])");
  EXPECT_EQ(m_[1].PyJson(moved.out, "d['tasks']"), "6");  // 3 ready, 1 delayed, 1 dead, 1 result
  EXPECT_EQ(m_[1].PyJson(moved.out, "d['taken_back']"), "0");
  for (const char* q : {"jobs", "jobs.dead", "jobs.results"}) {
    EXPECT_EQ(OwnerOf(0, q), "m2") << q;
    EXPECT_EQ(OwnerOf(1, q), "m2") << q;
  }

  // Everything is on m2, asked through m1 (redirected) and m2.
  for (int via : {0, 1}) {
    auto client = ClientOf(via);
    auto jobs = client->Stats("jobs");
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    EXPECT_EQ(jobs->ready(), 3u);
    EXPECT_EQ(jobs->delayed(), 1u);
    auto dead = client->Stats("jobs.dead");
    ASSERT_TRUE(dead.ok()) << dead.status();
    EXPECT_EQ(dead->dead(), 1u);
    auto results = client->Stats("jobs.results");
    ASSERT_TRUE(results.ok()) << results.status();
    EXPECT_EQ(results->ready(), 1u);  // the FAILED result of the dead task
    // A call by id (the id names m1's node) finds the task on m2.
    auto task = client->GetTask((*delayed)[0]);
    ASSERT_TRUE(task.ok()) << task.status();
    EXPECT_EQ(task->state(), v1::TASK_STATE_DELAYED);
  }
  // m1 holds no copy any more.
  auto on_m1 = ClientOf(0)->At(m_[0].address())->ListQueues();
  ASSERT_TRUE(on_m1.ok());
  for (const auto& q : *on_m1) EXPECT_FALSE(absl::StartsWith(q.config().name(), "jobs")) << q.config().name();

  // The dedup key came along: the same put stores nothing.
  auto again = at1->PutWithReceipt("jobs", {Spec("a2", "jobs.results", "key-a")});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->existing[0]);
  EXPECT_EQ(again->ids[0], (*ready)[0]);
  // Order kept: a, b, c come out first, in order.
  auto got = at1->Get("jobs", {.max_tasks = 3, .nowait = true});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*got)[i].task().id(), (*ready)[i]);

  // m2 keeps it across a crash; m1 restarted does not serve its old copy.
  ASSERT_TRUE(m_[1].RestartMaster(SIGKILL).ok());
  ASSERT_TRUE(m_[0].RestartMaster(SIGTERM).ok());
  auto after = ClientOf(0)->Stats("jobs");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->delayed(), 1u);
  EXPECT_EQ(OwnerOf(0, "jobs"), "m2");
}

TEST_F(ClusterMoveTest, RefusalsSayWhy) {
  auto at1 = ClientOf(0);
  ASSERT_NE(at1, nullptr);
  CreateOn("stay", "m1");
  if (HasFatalFailure()) return;
  constexpr int kExitRefused = 5;  // docs/CLI.md, exit codes
  CliResult to_self = m_[0].Cli({"queue", "move", "stay", "--to", "m1"});
  EXPECT_EQ(to_self.exit_code, kExitRefused);
  EXPECT_TRUE(absl::StrContains(to_self.err, "already")) << Describe(to_self);
  CliResult nowhere = m_[0].Cli({"queue", "move", "stay", "--to", "m9"});
  EXPECT_EQ(nowhere.exit_code, kExitRefused);
  EXPECT_TRUE(absl::StrContains(nowhere.err, "m9")) << Describe(nowhere);
  CliResult missing = m_[0].Cli({"queue", "move", "nosuch", "--to", "m2"});
  EXPECT_EQ(missing.exit_code, kExitRefused) << Describe(missing);
  EXPECT_EQ(OwnerOf(0, "stay"), "m1");
  // Still served on m1.
  EXPECT_TRUE(at1->Put("stay", {Spec("x")}).ok());
}

TEST_F(ClusterMoveTest, UnderLoadEveryTaskGivesExactlyOneResult) {
  auto at1 = ClientOf(0);
  ASSERT_NE(at1, nullptr);
  CreateOn("load", "m1");
  if (HasFatalFailure()) return;
  // A worker given m1 only; it follows the queue when it moves. Tasks take
  // 0.1 s each, but four take 3 s: they are still running when the drain
  // (1 s) ends, so they are taken back and run again on m2, their first
  // run's report refused.
  Process* worker = m_[0].StartWorker({"--queue", "load", "--concurrency", "8", "--id", "w1"});
  ASSERT_NE(worker, nullptr);

  constexpr int kSlow = 4;
  constexpr int kTasks = 600;
  constexpr int kBatch = 20;
  std::vector<uint64_t> ids;
  // Batches with dedup keys: a batch sent again stores nothing twice.
  auto put = [&](Client& client, int from, int to) -> absl::Status {
    for (int i = from; i < to; i += kBatch) {
      std::vector<v1::TaskSpec> batch;
      for (int k = i; k < std::min(i + kBatch, to); ++k) {
        v1::TaskSpec t = Spec(k < kSlow ? "3" : "0.1", "load.results", absl::StrCat("t", k));
        t.set_handler("sleep");
        batch.push_back(std::move(t));
      }
      auto stored = client.Put("load", std::move(batch));
      if (!stored.ok()) return stored.status();
      ids.insert(ids.end(), stored->begin(), stored->end());
    }
    return absl::OkStatus();
  };
  ASSERT_TRUE(put(*at1, 0, kTasks / 3).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto results = at1->Stats("load.results");
        return results.ok() && results->ready() >= 20;
      },
      absl::Seconds(60)));
  // The move starts while the worker holds leases; once m1 has fenced the
  // queue the rest of the tasks are put: refused "moving" and sent again
  // by the client until the switch, then stored on m2.
  std::unique_ptr<Process> move = m_[0].StartCli(
      {"queue", "move", "load", "--to", "m2", "--drain", "1", "--json"});
  ASSERT_NE(move, nullptr);
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(m_[0].master()->Stderr(), "cluster: moving queue"); },
      absl::Seconds(30)));
  absl::Status producer = put(*at1, kTasks / 3, kTasks);
  ASSERT_TRUE(producer.ok()) << producer;
  std::optional<int> move_exit = move->Wait(absl::Seconds(60));
  ASSERT_TRUE(move_exit.has_value());
  ASSERT_EQ(*move_exit, 0) << move->Stderr();
  std::cerr << "moved: " << move->Stdout();
  EXPECT_GE(std::stoi(m_[0].PyJson(move->Stdout(), "d['taken_back']")), kSlow);
  // What was there at the fence moved: nothing put after it.
  EXPECT_LE(std::stoi(m_[0].PyJson(move->Stdout(), "d['tasks']")), kTasks / 3 * 2);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kTasks));
  EXPECT_EQ(OwnerOf(0, "load"), "m2");
  EXPECT_EQ(OwnerOf(0, "load.results"), "m2");

  // Every task's result arrives on m2, once.
  auto at2 = ClientOf(1);
  auto results_ready = [&]() -> uint64_t {
    auto results = at2->Stats("load.results");
    return results.ok() ? results->ready() : 0;
  };
  ASSERT_TRUE(WaitFor([&] { return results_ready() >= static_cast<uint64_t>(kTasks); },
                      absl::Seconds(120)))
      << "results: " << results_ready();
  std::map<uint64_t, int> results = TakeResults(*at2, "load.results");
  EXPECT_EQ(results.size(), static_cast<size_t>(kTasks));
  for (uint64_t id : ids) EXPECT_EQ(results[id], 1) << "task " << id;
  auto load = at2->Stats("load");
  ASSERT_TRUE(load.ok());
  EXPECT_EQ(load->ready() + load->leased() + load->delayed(), 0u);
  EXPECT_TRUE(worker->Running());
  // The worker now takes "load" from m2.
  auto workers = at2->At(m_[1].address())->ListWorkers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->workers_size(), 1);
  EXPECT_EQ(workers->workers(0).queues(0), "load");
}

}  // namespace
}  // namespace taskq::testing
