#include "tests/cluster/multi_master_cluster.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"
#include "tests/harness_secret_scan.h"

namespace taskq::testing {
namespace {

constexpr absl::Duration kStopGrace = absl::Seconds(10);


bool EtcdInstalled() { return ::access("/usr/bin/etcd", X_OK) == 0; }

}  // namespace

std::string MultiMasterCluster::WhyUnavailable(bool cluster, bool cpu_quota) {
  if (std::string why = NetnsCluster::WhyUnavailable(); !why.empty()) return why;
  if (cluster && (!EtcdInstalled() || ::access("/usr/bin/etcdctl", X_OK) != 0)) {
    return "etcd is not installed (Debian: etcd-server, etcd-client)";
  }
  if (cpu_quota) return CpuQuota::WhyUnavailable();
  return "";
}

std::string MultiMasterCluster::MasterName(int i) { return absl::StrCat("master", i); }

std::vector<std::string> MultiMasterCluster::worker_hosts() const {
  std::vector<std::string> out;
  for (int i = 1; i <= options_.workers; ++i) out.push_back(absl::StrCat("worker", i));
  return out;
}

std::string MultiMasterCluster::MasterIp(int i) const {
  return net_->host(MasterName(i)).address;
}

std::string MultiMasterCluster::MasterAddress(int i) const {
  return absl::StrCat(MasterIp(i), ":", kMasterPort);
}

std::string MultiMasterCluster::EtcdEndpoint() const {
  if (!options_.cluster) return "";
  return absl::StrCat(net_->host("etcd").address, ":", kEtcdPort);
}

std::string MultiMasterCluster::NextName(const std::string& host, const std::string& program) {
  return absl::StrCat(host, "-", program, "-", ++counter_);
}

absl::Status MultiMasterCluster::Create(Options options) {
  if (net_) return absl::FailedPreconditionError("already created");
  if (options.masters < 1 || options.masters > 9 || options.workers < 0 ||
      options.workers > 50) {
    return absl::InvalidArgumentError("1..9 masters and 0..50 workers");
  }
  options_ = std::move(options);
  // etcd first, so that it keeps 10.213.0.1 whatever the counts.
  std::vector<std::string> hosts;
  if (options_.cluster) hosts.push_back("etcd");
  for (int i = 1; i <= options_.masters; ++i) hosts.push_back(MasterName(i));
  for (const std::string& w : worker_hosts()) hosts.push_back(w);
  hosts.push_back("client");
  auto net = TestNetwork::Create(hosts);
  if (!net.ok()) return net.status();
  net_ = *std::move(net);
  for (const std::string& h : hosts) {
    if (::mkdir(HostDir(h).c_str(), 0700) != 0) {
      return absl::InternalError(absl::StrCat("mkdir ", HostDir(h)));
    }
  }
  masters_.resize(static_cast<size_t>(options_.masters));
  if (options_.master_cores > 0) {
    for (int i = 1; i <= options_.masters; ++i) {
      auto quota = CpuQuota::Create(MasterName(i), options_.master_cores);
      if (!quota.ok()) return quota.status();
      masters_[static_cast<size_t>(i - 1)].quota = *std::move(quota);
    }
  }
  if (auto s = MakeCertificates(); !s.ok()) return s;
  if (options_.cluster) return StartEtcd();
  return absl::OkStatus();
}

absl::Status MultiMasterCluster::RunToEnd(const std::string& name, std::vector<std::string> argv) {
  return taskq::testing::RunToEnd(dir(), name, std::move(argv));
}

absl::Status MultiMasterCluster::MakeCertificates() {
  // One CA; each master a certificate for its own address signed by it, so
  // a client with the CA verifies whichever master a redirect names. One
  // token for all masters (the brief's contract: the same --token-file).
  const std::string ca_key = dir() + "/ca.key", ca = dir() + "/ca.pem";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  std::vector<std::string> make_ca = {"openssl", "req", "-x509", "-days", "2", "-subj",
                                      "/CN=taskq test CA", "-keyout", ca_key, "-out", ca,
                                      "-addext", "basicConstraints=critical,CA:TRUE",
                                      "-addext", "keyUsage=critical,keyCertSign,cRLSign"};
  make_ca.insert(make_ca.begin() + 2, ec.begin(), ec.end());
  if (auto s = RunToEnd("openssl-ca", make_ca); !s.ok()) return s;
  for (int i = 1; i <= options_.masters; ++i) {
    const std::string m = HostDir(MasterName(i));
    const std::string csr = absl::StrCat(dir(), "/", MasterName(i), ".csr");
    const std::string ext = absl::StrCat(dir(), "/", MasterName(i), "-ext.cnf");
    std::vector<std::string> make_csr = {"openssl", "req", "-subj", "/CN=" + MasterName(i),
                                         "-keyout", m + "/master.key", "-out", csr};
    make_csr.insert(make_csr.begin() + 2, ec.begin(), ec.end());
    if (auto s = RunToEnd(absl::StrCat("openssl-csr-", i), make_csr); !s.ok()) return s;
    if (auto s = WriteFile(ext, absl::StrCat("subjectAltName=IP:", MasterIp(i),
                                             ",IP:127.0.0.1\n"
                                             "basicConstraints=CA:FALSE\n"
                                             "extendedKeyUsage=serverAuth\n"));
        !s.ok()) {
      return s;
    }
    if (auto s = RunToEnd(absl::StrCat("openssl-sign-", i),
                          {"openssl", "x509", "-req", "-days", "2", "-in", csr, "-CA", ca,
                           "-CAkey", ca_key, "-CAcreateserial", "-extfile", ext, "-out",
                           m + "/master.pem"});
        !s.ok()) {
      return s;
    }
    ::chmod((m + "/master.key").c_str(), 0600);
  }
  // The token: 32 random bytes, hex.
  ProcessOptions o;
  o.argv = {"openssl", "rand", "-hex", "32"};
  o.output_dir = dir();
  o.name = "openssl-rand";
  auto p = Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  if ((*p)->Wait(absl::Seconds(30)) != 0) return absl::InternalError("openssl rand failed");
  const std::string token(absl::StripAsciiWhitespace((*p)->Stdout()));
  if (token.size() != 64) return absl::InternalError("openssl rand printed no token");
  std::remove((dir() + "/openssl-rand.out").c_str());  // no secret left in the logs
  for (const NetHost& h : net_->hosts()) {
    if (auto s = WriteFile(CaFile(h.name), ReadFile(ca), 0644); !s.ok()) return s;
    if (auto s = WriteFile(TokenFile(h.name), token + "\n", 0600); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::unique_ptr<Process> MultiMasterCluster::Spawn(const std::string& host,
                                                   const std::string& name,
                                                   std::vector<std::string> argv,
                                                   std::map<std::string, std::string> env,
                                                   const CpuQuota* quota) {
  std::vector<std::string> wrapped = net_->Wrap(host, std::move(argv));
  // The cgroup is entered before the namespace: the whole chain is limited.
  if (quota != nullptr) wrapped = quota->Wrap(std::move(wrapped));
  return SpawnAsHost(std::move(wrapped), HostDir(host), std::move(env), dir(), name);
}

absl::Status MultiMasterCluster::StartEtcd() {
  const std::string ip = net_->host("etcd").address;
  const std::string client_url = absl::StrCat("http://", ip, ":", kEtcdPort);
  const std::string peer_url = "http://127.0.0.1:2380";
  etcd_ = Spawn("etcd", NextName("etcd", "etcd"),
                {"/usr/bin/etcd", "--name", "e", "--data-dir", HostDir("etcd") + "/data",
                 "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", "e=" + peer_url, "--log-level", "warn"},
                // Debian's etcd 3.4 on amd64 needs nothing else; this keeps it
                // running on other architectures.
                {{"ETCD_UNSUPPORTED_ARCH", ""}});
  if (!etcd_) return absl::InternalError("cannot spawn etcd");
  // Answering a read from the client host, across the bridge.
  std::string last;
  const bool up = WaitFor(
      [&] {
        if (!etcd_->Running()) return true;
        auto probe = Spawn("client", NextName("client", "etcdctl"),
                           {"/usr/bin/etcdctl", "--endpoints", EtcdEndpoint(),
                            "--dial-timeout", "1s", "--command-timeout", "2s", "get", "probe"},
                           {{"ETCDCTL_API", "3"}});
        if (!probe) return true;
        std::optional<int> rc = probe->Wait(absl::Seconds(10));
        last = probe->Stderr();
        return rc == 0;
      },
      absl::Seconds(30), absl::Milliseconds(100));
  if (up && etcd_->Running()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("etcd did not come up: ", Tail(last, 2000), "\n",
                                             Tail(etcd_->Stderr(), 4000)));
}

absl::StatusOr<std::map<std::string, std::string>> MultiMasterCluster::EtcdRead(
    const std::string& prefix, bool keys_only) {
  if (!etcd_) return absl::FailedPreconditionError("no etcd in this cluster");
  std::vector<std::string> argv = {"/usr/bin/etcdctl", "--endpoints", EtcdEndpoint(),
                                   "--command-timeout", "5s", "get", "--prefix", prefix};
  if (keys_only) argv.push_back("--keys-only");
  auto p = Spawn("etcd", NextName("etcd", "etcdctl"), argv, {{"ETCDCTL_API", "3"}});
  if (!p) return absl::InternalError("cannot spawn etcdctl");
  if (p->Wait(absl::Seconds(20)) != 0) {
    p->Stop(absl::Seconds(1));
    return absl::UnavailableError(absl::StrCat("etcdctl get: ", p->Stderr()));
  }
  // Alternating lines: key, value (keys only: key, empty line).
  std::vector<std::string> lines = Lines(p->Stdout());
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (keys_only) {
      if (!lines[i].empty()) out[lines[i]] = "";
    } else if (i + 1 < lines.size()) {
      out[lines[i]] = lines[i + 1];
      ++i;
    }
  }
  return out;
}

absl::Status MultiMasterCluster::StartMaster(int i, std::vector<std::string> extra,
                                             absl::Duration timeout) {
  if (i < 1 || i > options_.masters) return absl::InvalidArgumentError("no such master");
  MasterSlot& slot = masters_[static_cast<size_t>(i - 1)];
  if (slot.process && slot.process->Running()) {
    return absl::FailedPreconditionError(absl::StrCat(MasterName(i), " is running"));
  }
  const std::string m = HostDir(MasterName(i));
  slot.args = {BinPath("taskq-master"),
               "--listen",
               absl::StrCat("0.0.0.0:", kMasterPort),
               "--tls-cert",
               m + "/master.pem",
               "--tls-key",
               m + "/master.key",
               "--token-file",
               TokenFile(MasterName(i)),
               "--port-file",
               m + "/port"};
  if (options_.cluster) {
    for (const std::string& flag : std::vector<std::string>{
             "--cluster", "etcd://" + EtcdEndpoint(), "--advertise", MasterAddress(i), "--name",
          MasterName(i), "--cluster-ttl", options_.cluster_ttl, "--cluster-ca",
          dir() + "/ca.pem"}) {
      slot.args.push_back(flag);
    }
  }
  slot.args.insert(slot.args.end(), options_.master_flags.begin(), options_.master_flags.end());
  slot.args.insert(slot.args.end(), extra.begin(), extra.end());
  return StartMasterProcess(i, timeout);
}

absl::Status MultiMasterCluster::StartMasters(absl::Duration timeout) {
  for (int i = 1; i <= options_.masters; ++i) {
    if (auto s = StartMaster(i, {}, timeout); !s.ok()) return s;
  }
  return options_.cluster ? WaitClusterFormed(timeout) : absl::OkStatus();
}

absl::Status MultiMasterCluster::WaitClusterFormed(absl::Duration timeout) {
  std::vector<int> running;
  for (int i = 1; i <= options_.masters; ++i) {
    if (master(i) != nullptr && master(i)->Running()) running.push_back(i);
  }
  std::string last;
  const bool formed = WaitFor(
      [&] {
        for (int i : running) {
          auto p = StartCli({"cluster", "status", "--json", "--retry-for", "1"}, i);
          if (!p || p->Wait(absl::Seconds(20)) != 0) {
            last = p ? p->Stderr() : "cannot start taskq";
            return false;
          }
          last = p->Stdout();
          // The CLI's JSON is compact (client/json_writer.h).
          if (Count(last, "\"up\":true") != running.size()) return false;
        }
        return true;
      },
      timeout, absl::Milliseconds(100));
  if (formed) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("the masters do not all see each other up: ", Tail(last, 2000)));
}

absl::Status MultiMasterCluster::StartMasterProcess(int i, absl::Duration timeout) {
  MasterSlot& slot = masters_[static_cast<size_t>(i - 1)];
  const std::string name = MasterName(i);
  const std::string port_file = HostDir(name) + "/port";
  const absl::Time deadline = absl::Now() + timeout;
  std::remove(port_file.c_str());
  if (slot.process) slot.old.push_back(std::move(slot.process));
  slot.process = Spawn(name, NextName(name, "taskq-master"), slot.args, {}, slot.quota.get());
  if (!slot.process) return absl::InternalError("cannot spawn taskq-master");
  Process* p = slot.process.get();
  WaitFor([&] { return !ReadFile(port_file).empty() || !p->Running(); }, deadline - absl::Now(),
          absl::Milliseconds(5));
  if (ReadFile(port_file).empty()) {
    return absl::InternalError(absl::StrCat(name, " did not start (",
                                            p->Running() ? "no port file" : "exited",
                                            "): ", Tail(p->Stderr(), 4000)));
  }
  absl::Status reach = absl::DeadlineExceededError("not tried");
  WaitFor(
      [&] {
        auto fd = net_->ConnectFrom("client", MasterIp(i), kMasterPort, absl::Seconds(1));
        if (fd.ok()) ::close(*fd);
        reach = fd.status();
        return fd.ok();
      },
      std::max(deadline - absl::Now(), absl::Seconds(1)), absl::Milliseconds(20));
  return reach;
}

absl::Status MultiMasterCluster::StopMaster(int i, int signal) {
  if (i < 1 || i > options_.masters) return absl::InvalidArgumentError("no such master");
  Process* p = masters_[static_cast<size_t>(i - 1)].process.get();
  if (p == nullptr) return absl::FailedPreconditionError("master not started");
  p->Kill(signal);
  if (!p->Wait(kStopGrace).has_value()) {
    p->Kill(SIGKILL);
    if (!p->Wait(kStopGrace).has_value()) {
      return absl::InternalError(absl::StrCat(MasterName(i), " survives SIGKILL"));
    }
  }
  return absl::OkStatus();
}

absl::Status MultiMasterCluster::RestartMaster(int i, absl::Duration timeout) {
  if (i < 1 || i > options_.masters) return absl::InvalidArgumentError("no such master");
  MasterSlot& slot = masters_[static_cast<size_t>(i - 1)];
  if (slot.args.empty()) return absl::FailedPreconditionError("master never started");
  if (slot.process && slot.process->Running()) {
    if (auto s = StopMaster(i, SIGTERM); !s.ok()) return s;
  }
  // The port is free once the old process is gone (SO_REUSEADDR); a start
  // that fails at once is tried again a couple of times anyway.
  absl::Status s;
  for (int attempt = 0; attempt < 3; ++attempt) {
    s = StartMasterProcess(i, timeout);
    if (s.ok() || !slot.process || slot.process->Running()) return s;
  }
  return s;
}

Process* MultiMasterCluster::master(int i) {
  if (i < 1 || i > options_.masters) return nullptr;
  return masters_[static_cast<size_t>(i - 1)].process.get();
}

double MultiMasterCluster::MasterCpuSeconds(int i) {
  Process* p = master(i);
  if (p == nullptr) return 0;
  // /proc/PID/stat fields 14 and 15 (utime, stime), after the ")" of comm.
  const std::string stat = ReadFile(absl::StrCat("/proc/", p->pid(), "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
  long utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return 0;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

long MultiMasterCluster::MasterThrottled(int i) const {
  if (i < 1 || i > options_.masters) return -1;
  const auto& quota = masters_[static_cast<size_t>(i - 1)].quota;
  return quota ? quota->Throttled() : -1;
}

Process* MultiMasterCluster::StartWorker(const std::string& host,
                                         const std::vector<std::string>& queues,
                                         std::vector<std::string> extra, int master) {
  std::vector<std::string> argv;
  if (options_.worker_nice != 0) argv = {"nice", "-n", absl::StrCat(options_.worker_nice)};
  for (const std::string& a :
       std::vector<std::string>{BinPath("taskq-worker"), "--master", MasterAddress(master),
                                "--tls-ca", CaFile(host), "--token-file", TokenFile(host)}) {
    argv.push_back(a);
  }
  for (const std::string& q : queues) {
    argv.push_back("--queue");
    argv.push_back(q);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = Spawn(host, NextName(host, "taskq-worker"), argv);
  if (!p) return nullptr;
  workers_.push_back(std::move(p));
  return workers_.back().get();
}

bool MultiMasterCluster::WaitWorkerConnected(Process* worker, absl::Duration timeout, int times) {
  if (worker == nullptr) return false;
  return WaitFor(
      [&] { return Count(worker->Stderr(), "connected to") >= static_cast<size_t>(times); },
      timeout, absl::Milliseconds(10));
}

void MultiMasterCluster::StopWorkers() {
  for (auto& w : workers_) {
    if (w->Running()) w->Kill(SIGTERM);
  }
  const absl::Time deadline = absl::Now() + kStopGrace;
  for (auto& w : workers_) {
    if (!w->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())).has_value()) {
      w->Kill(SIGKILL);
      w->Wait(kStopGrace);
    }
  }
}

std::unique_ptr<Process> MultiMasterCluster::StartCli(std::vector<std::string> args, int master,
                                                      const std::string& host) {
  std::vector<std::string> argv = {BinPath("taskq"), "--tls-ca", CaFile(host)};
  argv.insert(argv.end(), args.begin(), args.end());
  return Spawn(host, NextName(host, "taskq"), argv,
               {{"TASKQ_MASTER", MasterAddress(master)}, {"TASKQ_TOKEN_FILE", TokenFile(host)}});
}

CliResult MultiMasterCluster::Cli(std::vector<std::string> args, int master,
                                  absl::Duration timeout, const std::string& host) {
  CliResult r;
  const std::string what = absl::StrJoin(args, " ");
  const absl::Time start = absl::Now();
  auto p = StartCli(std::move(args), master, host);
  if (!p) return r;
  return FinishCli(*p, start, timeout, absl::StrCat(Tail(what, 300), " on ", host));
}

MultiMasterCluster::~MultiMasterCluster() {
  // Workers first (they drain), then the masters, then etcd.
  StopWorkers();
  for (MasterSlot& slot : masters_) {
    if (slot.process) slot.process->Stop(kStopGrace);
  }
  if (etcd_) etcd_->Stop(kStopGrace);
  DumpLogsIfFailed();
  if (!dir().empty()) ExpectNoSecretsInLogs(dir());
  workers_.clear();
  masters_.clear();  // removes the cgroups (killing anything left in them)
  etcd_.reset();
  net_.reset();  // kills whatever is left inside the hosts
}

void MultiMasterCluster::DumpLogsIfFailed() {
  if (!::testing::Test::HasFailure()) return;
  auto dump = [](Process* p) { DumpStderr("multi-master", p); };
  dump(etcd_.get());
  for (MasterSlot& slot : masters_) {
    for (auto& old : slot.old) dump(old.get());
    dump(slot.process.get());
  }
  for (auto& w : workers_) dump(w.get());
}

}  // namespace taskq::testing
