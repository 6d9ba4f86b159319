// taskq-cluster-scaling: the cluster scaling figure of docs/CLUSTER.md
// ("Scaling"). In network namespaces (tests/cluster/multi_master_cluster.h):
// an etcd host, master hosts each under a CPU quota (so the master is the
// bottleneck, as on a small machine), worker hosts and a client host.
//
//   1. one master owning all Q queues: taskq-cluster-square-bench from the
//      client host, W workers serving the queues;
//   2. M masters, the queues (new names) spread Q/M per master with
//      CreateQueueRequest.on; the same workers and workload.
//
// Prints both tasks/s side by side, the ratio, and each master's CPU use
// (CPU seconds over the wall time, against its quota). Needs root; run
// through bench/cluster_scaling.sh. Everything it makes (namespaces,
// cgroups, processes) is removed at the end, on Ctrl-C too (cgroups of a
// killed run are swept by the next).
//
// Thread-safety: a program; one thread drives everything.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "tests/cluster/multi_master_cluster.h"

namespace taskq {
namespace {

using testing::MultiMasterCluster;

struct Options {
  int masters = 3;
  int workers = 6;
  int queues = 12;
  double master_cores = 0.25;
  uint64_t tasks = 24000;
  uint64_t warmup = 1200;
  uint64_t window = 200;
  uint64_t batch = 100;
  int concurrency = 4;
  std::string store = "sqlite";
  std::string fsync = "always";
  bool standalone = false;   // one master without --cluster (no etcd); phase 1 only
  bool worker_per_master = false;
  bool baseline_only = false;
  int nice = 0;
};

// One phase's figures.
struct Figure {
  bool ok = false;
  double tasks_per_s = 0;
  std::string output;
  std::vector<double> master_cpu;  // CPU seconds / wall seconds, per master
  std::vector<long> throttled;     // quota periods that ran out, per master
  double wall_s = 0;
};

std::string Field(const std::string& text, const std::string& key) {
  size_t at = text.rfind("RESULT ");
  if (at == std::string::npos) return "";
  at = text.find(" " + key + "=", at);
  if (at == std::string::npos) return "";
  at += key.size() + 2;
  return text.substr(at, text.find_first_of(" \n", at) - at);
}

class Scaling {
 public:
  explicit Scaling(const Options& o) : o_(o) {}

  int Main() {
    const bool cluster = !o_.standalone;
    if (std::string why = MultiMasterCluster::WhyUnavailable(cluster, o_.master_cores > 0);
        !why.empty()) {
      std::fprintf(stderr, "taskq-cluster-scaling: cannot run here: %s\n", why.c_str());
      return 77;
    }
    MultiMasterCluster::Options co;
    co.masters = o_.standalone ? 1 : o_.masters;
    co.workers = o_.workers;
    co.cluster = cluster;
    co.master_cores = o_.master_cores;
    co.worker_nice = o_.nice;
    co.master_flags = {"--store", o_.store, "--fsync", o_.fsync, "--log-level", "warning"};
    if (absl::Status s = c_.Create(co); !s.ok()) return Fail("cluster", s);
    std::printf("hosts: %s%d master(s) under %s at %.2f core each, %d workers x concurrency %d, "
                "client; %d queues, %llu tasks per phase (store %s, fsync %s)\n",
                cluster ? "etcd, " : "", co.masters,
                o_.master_cores > 0 ? testing::CpuQuota::Kind().c_str() : "no quota",
                o_.master_cores, o_.workers, o_.concurrency, o_.queues,
                static_cast<unsigned long long>(o_.tasks), o_.store.c_str(), o_.fsync.c_str());
    std::fflush(stdout);
    if (absl::Status s = c_.StartMaster(1); !s.ok()) return Fail("master1", s);
    Figure one = Phase("one", 1);
    std::printf("\n== 1 master ==\n%s", one.output.c_str());
    if (!one.ok) return 1;
    if (o_.standalone || o_.baseline_only) {
      Print(one, std::nullopt);
      return 0;
    }
    c_.StopWorkers();
    for (int i = 2; i <= o_.masters; ++i) {
      if (absl::Status s = c_.StartMaster(i); !s.ok()) return Fail(c_.MasterName(i), s);
    }
    Figure many = Phase("many", o_.masters);
    std::printf("\n== %d masters ==\n%s", o_.masters, many.output.c_str());
    if (!many.ok) return 1;
    Print(one, many);
    return 0;
  }

 private:
  int Fail(const std::string& what, const absl::Status& s) {
    std::fprintf(stderr, "taskq-cluster-scaling: %s: %s\n", what.c_str(), s.ToString().c_str());
    return 1;
  }

  std::vector<std::string> BenchArgs(const std::string& prefix, int masters) {
    std::vector<std::string> argv = {"nice", "-n", absl::StrCat(o_.nice),
                                     testing::BinPath("bench/taskq-cluster-square-bench"),
                                     "--tls-ca", c_.CaFile("client"), "--token-file",
                                     c_.TokenFile("client"), "--queues",
                                     absl::StrCat(o_.queues), "--prefix", prefix};
    for (int i = 1; i <= masters; ++i) {
      argv.push_back("--master");
      argv.push_back(o_.standalone ? c_.MasterAddress(i)
                                   : absl::StrCat(c_.MasterName(i), "=", c_.MasterAddress(i)));
    }
    return argv;
  }

  // Creates PREFIX.0..Q-1 spread over `masters`, starts the workers on
  // them, runs the measured workload.
  Figure Phase(const std::string& prefix, int masters) {
    Figure f;
    // The queues exist (placed) before any worker names them: a worker's
    // Work stream would otherwise place them by the default choice.
    std::vector<std::string> setup = BenchArgs(prefix, masters);
    for (const char* a : {"--tasks", "1", "--warmup", "0", "--setup-only"}) setup.push_back(a);
    auto p = c_.Spawn("client", absl::StrCat("client-setup-", prefix), setup);
    if (!p || p->Wait(absl::Seconds(60)) != 0) {
      f.output = absl::StrCat("creating the queues failed: ", p ? p->Stderr() : "", "\n");
      return f;
    }
    std::vector<std::string> queues;
    for (int k = 0; k < o_.queues; ++k) queues.push_back(absl::StrCat(prefix, ".", k));
    const std::vector<std::string> flags = {"--concurrency", absl::StrCat(o_.concurrency),
                                            "--prefetch", "64", "--log-level", "warning"};
    for (const std::string& host : c_.worker_hosts()) {
      if (o_.worker_per_master) {
        for (int m = 1; m <= masters; ++m) {
          std::vector<std::string> mine;
          for (int k = m - 1; k < o_.queues; k += masters) mine.push_back(queues[k]);
          c_.StartWorker(host, mine, flags, m);
        }
      } else {
        c_.StartWorker(host, queues, flags, 1);
      }
    }
    std::vector<std::string> run = BenchArgs(prefix, masters);
    for (const std::string& a :
         {std::string("--tasks"), absl::StrCat(o_.tasks), std::string("--warmup"),
          absl::StrCat(o_.warmup), std::string("--window"), absl::StrCat(o_.window),
          std::string("--batch"), absl::StrCat(o_.batch), std::string("--min-workers"),
          absl::StrCat(o_.workers)}) {
      run.push_back(a);
    }
    auto bench = c_.Spawn("client", absl::StrCat("client-bench-", prefix), run);
    if (!bench) return f;
    // The masters' CPU over the measured run alone: from the bench's
    // "measuring" line to its RESULT line.
    auto printed = [&](const char* what) {
      return testing::WaitFor([&] { return bench->Stdout().find(what) != std::string::npos ||
                                  !bench->Running(); },
                     absl::Minutes(10), absl::Milliseconds(2));
    };
    printed("measuring\n");
    std::vector<double> cpu0;
    std::vector<long> thr0;
    for (int i = 1; i <= masters; ++i) {
      cpu0.push_back(c_.MasterCpuSeconds(i));
      thr0.push_back(c_.MasterThrottled(i));
    }
    const absl::Time start = absl::Now();
    printed("RESULT ");
    f.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
    for (int i = 1; i <= masters; ++i) {
      f.master_cpu.push_back((c_.MasterCpuSeconds(i) - cpu0[i - 1]) / f.wall_s);
      f.throttled.push_back(c_.MasterThrottled(i) - thr0[i - 1]);
    }
    std::optional<int> rc = bench->Wait(absl::Minutes(10));
    if (!rc) bench->Stop(absl::Seconds(5));
    f.output = bench->Stdout();
    if (rc != 0) absl::StrAppend(&f.output, bench->Stderr());
    f.ok = rc == 0 && absl::SimpleAtod(Field(f.output, "tasks_per_s"), &f.tasks_per_s);
    return f;
  }

  void Print(const Figure& one, const std::optional<Figure>& many) {
    auto cpu = [](const Figure& f) {
      std::string s;
      for (size_t i = 0; i < f.master_cpu.size(); ++i) {
        absl::StrAppend(&s, i ? ", " : "", absl::StrFormat("%.2f", f.master_cpu[i]));
        if (f.throttled[i] >= 0) absl::StrAppend(&s, absl::StrFormat(" (%d throttled)", f.throttled[i]));
      }
      return s;
    };
    // Tasks per CPU-second of the masters: what a master core is worth.
    auto per_core = [](const Figure& f) {
      double used = 0;
      for (double c : f.master_cpu) used += c;
      return used > 0 ? f.tasks_per_s / used : 0.0;
    };
    std::printf("\n== scaling ==\n");
    std::printf("1 master:   %8.0f tasks/s   %8.0f tasks per master CPU-second   master CPU "
                "(cores): %s\n",
                one.tasks_per_s, per_core(one), cpu(one).c_str());
    if (!many) return;
    std::printf("%d masters:  %8.0f tasks/s   %8.0f tasks per master CPU-second   master CPU "
                "(cores): %s\n",
                o_.masters, many->tasks_per_s, per_core(*many), cpu(*many).c_str());
    const double ratio = many->tasks_per_s / one.tasks_per_s;
    std::printf("ratio:      %.2fx\n", ratio);
    if (o_.master_cores > 0) {
      // The ratio compares quotas only if every master used its quota in
      // both phases.
      for (const Figure* f : {&one, &*many}) {
        for (double used : f->master_cpu) {
          if (used < 0.8 * o_.master_cores) {
            std::printf("note: in the %s phase a master used %.2f of its %.2f cores: the masters "
                        "were not the only bottleneck (the workers, the client or other load on "
                        "this machine were), so the ratio is not the masters' scaling; compare "
                        "the tasks per master CPU-second, or try a smaller --master-cpu\n",
                        f == &one ? "1-master" : "many-master", used, o_.master_cores);
            break;
          }
        }
      }
    }
    std::printf("SCALING one_tasks_per_s=%.0f many_tasks_per_s=%.0f masters=%d ratio=%.2f "
                "one_per_master_cpu_s=%.0f many_per_master_cpu_s=%.0f\n",
                one.tasks_per_s, many->tasks_per_s, o_.masters, ratio, per_core(one),
                per_core(*many));
    std::fflush(stdout);
  }

  const Options& o_;
  MultiMasterCluster c_;
};

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"The cluster scaling figure: the square workload over Q queues with one master, "
               "then spread over M masters, each master under a CPU quota, in network "
               "namespaces. Needs root, etcd, nftables, openssl. See docs/CLUSTER.md#scaling.",
               "taskq-cluster-scaling"};
  app.add_option("--masters", o.masters, "masters of the second phase")->check(CLI::Range(2, 9))->capture_default_str();
  app.add_option("--workers", o.workers, "worker hosts")->check(CLI::Range(1, 50))->capture_default_str();
  app.add_option("--queues", o.queues, "task queues")->check(CLI::Range(1, 200))->capture_default_str();
  app.add_option("--master-cpu", o.master_cores, "CPU quota per master, in cores (0: none)")
      ->check(CLI::Range(0.0, 64.0))->capture_default_str();
  app.add_option("--tasks", o.tasks, "tasks measured per phase")->check(CLI::Range(uint64_t{1}, uint64_t{1} << 30))->capture_default_str();
  app.add_option("--warmup", o.warmup, "tasks run first in each phase, not measured")->capture_default_str();
  app.add_option("--window", o.window, "tasks in flight per queue")->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20))->capture_default_str();
  app.add_option("--batch", o.batch, "tasks per Put")->check(CLI::Range(uint64_t{1}, uint64_t{1000}))->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "handler slots per worker")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--store", o.store, "the masters' --store")->check(CLI::IsMember({"sqlite", "memory"}))->capture_default_str();
  app.add_option("--fsync", o.fsync, "the masters' --fsync")->check(CLI::IsMember({"always", "interval", "never"}))->capture_default_str();
  app.add_option("--nice", o.nice,
                 "niceness of the workers and the load generator, so that the masters get "
                 "their quota first on a shared machine (0: none)")
      ->check(CLI::Range(0, 19))->capture_default_str();
  app.add_flag("--standalone", o.standalone,
               "one master without --cluster and no etcd: the single-master figure only");
  app.add_flag("--baseline-only", o.baseline_only, "stop after the single-master phase");
  app.add_flag("--worker-per-master", o.worker_per_master,
               "on each worker host, one taskq-worker per master serving that master's queues "
               "(instead of one worker following the redirects)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  Scaling scaling(o);
  return scaling.Main();
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
