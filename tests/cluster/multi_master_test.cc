// Faults of a cluster of three masters coordinated by etcd (issue 18,
// docs/CLUSTER.md), on hosts made of network namespaces
// (multi_master_cluster.h): an etcd host, master1..3, three worker hosts
// and a client host.
//
// - A master killed with SIGKILL under load: its queues answer UNAVAILABLE
//   naming it on the other masters, the other masters' queues keep
//   completing, and after its restart every acknowledged task of its
//   queues completes exactly once (each result counted).
// - etcd unreachable for 10 s (its host black-holed): the masters keep
//   serving the queues they own, a new queue cannot be placed (UNAVAILABLE
//   naming the cluster store), and no queue changes owner.
// - A queue moved to another master under load (`taskq queue move`, asked
//   of a third master): the masters copy it over TLS with the master
//   token, tasks put during the move land once, running tasks are taken
//   back or finish, and every task gives exactly one result, read through
//   its new owner.
//
// Queue qK and its result queue rK live on masterK (`queue create --on`).
#include <signal.h>

#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/multi_master_cluster.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

constexpr int kMasters = 3;

// What the binaries of this build lack for these tests ("" if nothing).
// The number after "KEY": in the CLI's (compact) JSON, -1 if absent.
long JsonNumber(const std::string& json, const std::string& key) {
  const std::string field = "\"" + key + "\":";
  const size_t at = json.find(field);
  if (at == std::string::npos) return -1;
  const size_t begin = at + field.size();
  const size_t end = json.find_first_not_of("0123456789", begin);
  long n = -1;
  return absl::SimpleAtoi(json.substr(begin, end - begin), &n) ? n : -1;
}

// "QUEUE MASTER" lines, sorted, from `taskq cluster status --json` (the
// GetCluster view: each master's own queue list).
std::string OwnersOf(const std::string& json) {
  TempDir dir;
  ProcessOptions o;
  o.argv = {"/usr/bin/python3", "-c",
            "import json, sys\n"
            "d = json.load(sys.stdin)\n"
            "print('\\n'.join(sorted(q['name'] + ' ' + m['name'] + (' up' if m['up'] else ' down')\n"
            "  for m in d['masters'] for q in m['queue_stats'])))\n"};
  o.stdin_data = json;
  o.output_dir = dir.path();
  o.name = "owners";
  auto p = Process::Start(o);
  if (!p.ok() || (*p)->Wait(absl::Seconds(30)) != 0) {
    ADD_FAILURE() << "python3 on " << json << ": " << (p.ok() ? (*p)->Stderr() : "");
    return "";
  }
  return (*p)->Stdout();
}

class MultiMasterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MultiMasterCluster::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
    MultiMasterCluster::Options o;
    o.masters = kMasters;
    o.workers = 3;
    o.cluster_ttl = "2s";
    absl::Status s = c_.Create(o);
    ASSERT_TRUE(s.ok()) << s;
    s = c_.StartMasters();
    ASSERT_TRUE(s.ok()) << s;
    for (int k = 1; k <= kMasters; ++k) {
      for (const std::string& q : {Queue(k), ResultQueue(k)}) {
        CliResult r = c_.Cli({"queue", "create", q, "--on", MultiMasterCluster::MasterName(k)});
        ASSERT_EQ(r.exit_code, 0) << Describe(r);
      }
    }
    // One worker per worker host serving every queue: it learns which
    // master owns which and holds one Work stream per master.
    for (const std::string& host : c_.worker_hosts()) {
      Process* w = c_.StartWorker(
          host, {Queue(1), Queue(2), Queue(3)},
          {"--concurrency", "2", "--allow-exec",
           R"(slow=/bin/sh -c "read n; /bin/sleep 0.2; echo $n")"});
      ASSERT_TRUE(c_.WaitWorkerConnected(w)) << host;
    }
  }

  static std::string Queue(int k) { return absl::StrCat("q", k); }
  static std::string ResultQueue(int k) { return absl::StrCat("r", k); }

  // Submits payloads "K-1".."K-n" to qK through its owner, results to rK;
  // fills `expected`. True if the put was acknowledged (one id each).
  bool Submit(int k, int n, std::set<std::string>* expected) {
    std::vector<std::string> args = {"submit",   "--queue", Queue(k), "--handler", "exec",
                                     "--arg",    "slow",    "--reply-to", ResultQueue(k)};
    for (int i = 1; i <= n; ++i) {
      args.push_back(absl::StrCat(k, "-", i));
      expected->insert(args.back());
    }
    CliResult r = c_.Cli(args, k);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(Lines(r.out).size(), static_cast<size_t>(n)) << Describe(r);
    return r.exit_code == 0 && Lines(r.out).size() == static_cast<size_t>(n);
  }

  // Reads every result of rK (until none is owed) through `via`.
  CliResult ReadResults(int k, int via, absl::Duration timeout = absl::Seconds(90)) {
    return c_.Cli({"results", ResultQueue(k), "--keep", "--quiet", "--timeout",
                   absl::StrCat(absl::ToInt64Seconds(timeout))},
                  via, timeout + absl::Seconds(30));
  }

  // Placements (queue -> owner) as etcd holds them.
  std::map<std::string, std::string> Placements() {
    auto all = c_.EtcdRead("/taskq/queues/");
    EXPECT_TRUE(all.ok()) << all.status();
    return all.ok() ? *all : std::map<std::string, std::string>{};
  }
  // Queue -> owner as the masters report it (GetCluster through master `via`).
  std::string ClusterOwners(int via, std::string* json = nullptr) {
    CliResult r = c_.Cli({"cluster", "status", "--json"}, via);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    if (json != nullptr) *json = r.out + r.err;
    return OwnersOf(r.out);
  }
  // Masters registered (alive) in etcd.
  size_t MastersUp() {
    auto all = c_.EtcdRead("/taskq/masters/", /*keys_only=*/true);
    return all.ok() ? all->size() : 0;
  }

  MultiMasterCluster c_;
};

TEST_F(MultiMasterTest, KilledMasterQueuesAnswerOwnerDownOthersKeepRunningNothingLostAfterRestart) {
  std::set<std::string> expected[kMasters + 1];
  for (int k = 1; k <= kMasters; ++k) ASSERT_TRUE(Submit(k, 30, &expected[k]));

  // Under load: master2's queue is being worked on (results coming in).
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = c_.Cli({"queue", "stats", ResultQueue(2), "--json"}, 2);
        return JsonNumber(r.out, "ready") >= 3;
      },
      absl::Seconds(60), absl::Milliseconds(100)));
  ASSERT_TRUE(c_.StopMaster(2, SIGKILL).ok());

  // Asked of another master, q2 is owned by a master that is down: once
  // its membership lapsed (--cluster-ttl 2s) the answer says so at once.
  CliResult down;
  const bool named = WaitFor(
      [&] {
        down = c_.Cli({"queue", "stats", Queue(2), "--retry-for", "1"}, 1);
        return down.exit_code != 0 && absl::StrContains(down.err, "master2") &&
               absl::StrContains(down.err, "down");
      },
      absl::Seconds(30), absl::Milliseconds(200));
  EXPECT_TRUE(named) << Describe(down);
  CliResult via3 = c_.Cli({"queue", "stats", Queue(2), "--retry-for", "1"}, 3);
  EXPECT_NE(via3.exit_code, 0) << Describe(via3);
  EXPECT_TRUE(absl::StrContains(via3.err, "master2 is down")) << Describe(via3);

  // The other masters' queues complete meanwhile, every task once.
  for (int k : {1, 3}) {
    CliResult r = ReadResults(k, k);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(CheckEachOnce(Lines(r.out), expected[k]), "") << "queue " << Queue(k);
  }
  EXPECT_FALSE(c_.master(2)->Running());

  // master2 restarts on its data dir: every task it acknowledged completes
  // exactly once.
  absl::Status s = c_.RestartMaster(2);
  ASSERT_TRUE(s.ok()) << s;
  CliResult r2 = ReadResults(2, 2);
  EXPECT_EQ(r2.exit_code, 0) << Describe(r2);
  EXPECT_EQ(CheckEachOnce(Lines(r2.out), expected[2]), "") << "queue q2 after the restart";
  // And it is reachable through the others again.
  EXPECT_TRUE(WaitFor([&] { return c_.Cli({"queue", "stats", Queue(2)}, 1).exit_code == 0; },
                      absl::Seconds(30), absl::Milliseconds(200)));
}

TEST_F(MultiMasterTest, EtcdUnreachableForTenSecondsMastersKeepServingNoQueueChangesOwner) {
  const std::map<std::string, std::string> before = Placements();
  for (int k = 1; k <= kMasters; ++k) {
    EXPECT_EQ(before.at("/taskq/queues/" + Queue(k)), MultiMasterCluster::MasterName(k));
  }
  ASSERT_EQ(MastersUp(), static_cast<size_t>(kMasters));
  const std::string owners = ClusterOwners(1);
  for (int k = 1; k <= kMasters; ++k) {
    EXPECT_TRUE(absl::StrContains(owners, absl::StrCat(Queue(k), " master", k, " up")))
        << owners;
  }

  ASSERT_TRUE(c_.net().BlackHole("etcd").ok());
  const absl::Time cut = absl::Now();

  // Each master serves the queues it owns: a submit --wait through each
  // owner gets every result once.
  for (int k = 1; k <= kMasters; ++k) {
    // Results to rK, placed before the cut: a private result queue would
    // be a new queue to place, which must wait for the store.
    std::vector<std::string> args = {"submit", "--queue",    Queue(k),       "--handler",
                                     "exec",   "--arg",      "slow",         "--reply-to",
                                     ResultQueue(k), "--wait", "--wait-timeout", "8"};
    std::set<std::string> expected;
    for (int i = 1; i <= 6; ++i) {
      args.push_back(absl::StrCat("cut-", k, "-", i));
      expected.insert(args.back());
    }
    CliResult r = c_.Cli(args, k);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(CheckEachOnce(Lines(r.out), expected), "") << "queue " << Queue(k);
  }
  // A new queue cannot be placed while the store is unreachable.
  CliResult place = c_.Cli({"queue", "create", "newq", "--retry-for", "0"}, 1);
  EXPECT_NE(place.exit_code, 0) << Describe(place);
  EXPECT_TRUE(absl::StrContains(place.err, "cluster store unreachable")) << Describe(place);
  EXPECT_LT(absl::Now() - cut, absl::Seconds(10)) << "the checks took the whole cut";
  // The fault lasts 10 s, past the 2 s membership TTL: a duration the test
  // sets, not a wait for something to happen.
  absl::SleepFor(cut + absl::Seconds(10) - absl::Now());
  for (int k = 1; k <= kMasters; ++k) {
    EXPECT_TRUE(c_.master(k)->Running()) << MultiMasterCluster::MasterName(k);
  }
  ASSERT_TRUE(c_.net().Heal("etcd").ok());

  // The masters register again; the placements are those of before.
  EXPECT_TRUE(WaitFor([&] { return MastersUp() == static_cast<size_t>(kMasters); },
                      absl::Seconds(30), absl::Milliseconds(200)));
  EXPECT_EQ(Placements(), before);
  // Every master sees the others up again with their queues (its
  // membership watch learns the re-registrations).
  for (int via = 1; via <= kMasters; ++via) {
    std::string json;
    EXPECT_TRUE(WaitFor([&] { return ClusterOwners(via, &json) == owners; }, absl::Seconds(30),
                        absl::Milliseconds(250)))
        << "through master" << via << ": " << json << "\nwanted:\n" << owners;
  }
  // And queues work through any master again.
  std::set<std::string> expected;
  for (int k = 1; k <= kMasters; ++k) ASSERT_TRUE(Submit(k, 3, &expected));
  for (int k = 1; k <= kMasters; ++k) {
    CliResult r = ReadResults(k, 1);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(Lines(r.out).size(), 3u) << Describe(r);
  }
}

TEST_F(MultiMasterTest, QueueMovedUnderLoadLosesAndDuplicatesNothing) {
  std::set<std::string> expected;
  ASSERT_TRUE(Submit(1, 40, &expected));
  // Under load: q1's tasks are being run (results coming in).
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = c_.Cli({"queue", "stats", ResultQueue(1), "--json"}, 1);
        return JsonNumber(r.out, "ready") >= 3;
      },
      absl::Seconds(60), absl::Milliseconds(100)));
  // Asked of master3: it goes to master1, which moves q1 (and r1, where
  // its results go) to master2 while more tasks are submitted.
  std::unique_ptr<Process> move = c_.StartCli(
      {"queue", "move", Queue(1), "--to", "master2", "--drain", "0.3", "--json"}, 3);
  ASSERT_NE(move, nullptr);
  // Once master1 has fenced q1, the rest is submitted: refused as moving
  // and sent again by the CLI until it lands on master2.
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(c_.master(1)->Stderr(), "cluster: moving queue"); },
      absl::Seconds(30), absl::Milliseconds(20)));
  std::vector<std::string> args = {"submit",   "--queue", Queue(1), "--handler", "exec",
                                   "--arg",    "slow",    "--reply-to", ResultQueue(1)};
  for (int i = 41; i <= 60; ++i) {
    args.push_back(absl::StrCat("1-", i));
    expected.insert(args.back());
  }
  CliResult submitted = c_.Cli(args, 1);
  EXPECT_EQ(submitted.exit_code, 0) << Describe(submitted);
  std::optional<int> moved = move->Wait(absl::Seconds(90));
  ASSERT_TRUE(moved.has_value());
  ASSERT_EQ(*moved, 0) << move->Stderr();
  std::cerr << "moved: " << move->Stdout();
  const std::map<std::string, std::string> placed = Placements();
  EXPECT_EQ(placed.at("/taskq/queues/" + Queue(1)), "master2");
  EXPECT_EQ(placed.at("/taskq/queues/" + ResultQueue(1)), "master2");

  // Every task, submitted before or during the move, gives one result,
  // read through master1, which sends the reader to master2.
  CliResult r = ReadResults(1, 1);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(CheckEachOnce(Lines(r.out), expected), "") << "queue q1 after its move";
  // The other masters' queues were not touched.
  std::set<std::string> expected3;
  ASSERT_TRUE(Submit(3, 5, &expected3));
  CliResult r3 = ReadResults(3, 3);
  EXPECT_EQ(CheckEachOnce(Lines(r3.out), expected3), "");
}

}  // namespace
}  // namespace taskq::testing
