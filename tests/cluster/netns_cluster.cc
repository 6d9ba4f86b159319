#include "tests/cluster/netns_cluster.h"

#include "tests/harness_secret_scan.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace taskq::testing {
namespace {

constexpr absl::Duration kStopGrace = absl::Seconds(10);


absl::Status CopyFile(const std::string& from, const std::string& to, int mode) {
  std::string contents = ReadFile(from);
  if (contents.empty()) return absl::NotFoundError(absl::StrCat(from, " is empty or missing"));
  return WriteFile(to, contents, mode);
}

}  // namespace

std::string NetnsCluster::WhyUnavailable() {
  std::string why = TestNetwork::WhyUnavailable();
  if (!why.empty()) return why;
  if (::access("/usr/bin/openssl", X_OK) != 0) return "openssl is not installed";
  return "";
}

absl::Status NetnsCluster::Create(int workers) {
  if (dir().empty()) return absl::InternalError("no temp dir");
  workers_count_ = workers;
  std::vector<std::string> hosts = {"master"};
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
  client_master_ = master_address();
  return MakeCertificates();
}

std::vector<std::string> NetnsCluster::worker_hosts() const {
  std::vector<std::string> out;
  for (int i = 1; i <= workers_count_; ++i) out.push_back(absl::StrCat("worker", i));
  return out;
}

std::string NetnsCluster::master_address() const {
  return absl::StrCat(master_ip(), ":", kMasterPort);
}

std::string NetnsCluster::TokenFile(const std::string& host) const {
  return host == "master" ? HostDir(host) + "/token" : HostDir(host) + "/taskq.token";
}

std::string NetnsCluster::NextName(const std::string& host, const std::string& program) {
  return absl::StrCat(host, "-", program, "-", ++counter_);
}

absl::Status NetnsCluster::RunToEnd(const std::string& name, std::vector<std::string> argv) {
  return taskq::testing::RunToEnd(dir(), name, std::move(argv));
}

absl::Status NetnsCluster::MakeCertificates() {
  // A CA, and the master's certificate for its address signed by it:
  // clients verify the master with --tls-ca and no --tls-server-name.
  const std::string ca_key = dir() + "/ca.key", ca = dir() + "/ca.pem";
  const std::string m = HostDir("master");
  const std::string ext = dir() + "/master-ext.cnf";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  std::vector<std::string> make_ca = {"openssl", "req", "-x509", "-days", "2", "-subj",
                                      "/CN=taskq test CA", "-keyout", ca_key, "-out", ca,
                                      "-addext", "basicConstraints=critical,CA:TRUE",
                                      "-addext", "keyUsage=critical,keyCertSign,cRLSign"};
  make_ca.insert(make_ca.begin() + 2, ec.begin(), ec.end());
  if (auto s = RunToEnd("openssl-ca", make_ca); !s.ok()) return s;
  std::vector<std::string> make_csr = {"openssl", "req", "-subj", "/CN=taskq-master", "-keyout",
                                       m + "/master.key", "-out", dir() + "/master.csr"};
  make_csr.insert(make_csr.begin() + 2, ec.begin(), ec.end());
  if (auto s = RunToEnd("openssl-csr", make_csr); !s.ok()) return s;
  // 127.0.0.1 too: programs on the master host itself may use loopback.
  if (auto s = WriteFile(ext, absl::StrCat("subjectAltName=IP:", master_ip(),
                                           ",IP:127.0.0.1,DNS:taskq-master\n"
                                           "basicConstraints=CA:FALSE\n"
                                           "extendedKeyUsage=serverAuth\n"));
      !s.ok()) {
    return s;
  }
  if (auto s = RunToEnd("openssl-sign",
                        {"openssl", "x509", "-req", "-days", "2", "-in", dir() + "/master.csr",
                         "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-extfile", ext, "-out",
                         m + "/master.pem"});
      !s.ok()) {
    return s;
  }
  ::chmod((m + "/master.key").c_str(), 0600);
  for (const NetHost& h : net_->hosts()) {
    if (auto s = CopyFile(ca, CaFile(h.name), 0644); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::unique_ptr<Process> SpawnAsHost(std::vector<std::string> argv, const std::string& host_dir,
                                     std::map<std::string, std::string> env,
                                     const std::string& output_dir, const std::string& name) {
  ProcessOptions o;
  o.argv = std::move(argv);
  o.env = {
      {"HOME", host_dir},
      {"XDG_CONFIG_HOME", host_dir + "/.config"},
      {"TASKQ_MASTER", ""},
      {"TASKQ_TOKEN_FILE", ""},
      {"TASKQ_TLS_CA", ""},
      {"TASKQ_JOIN", ""},
  };
  for (auto& [k, v] : env) o.env[k] = v;
  o.output_dir = output_dir;
  o.name = name;
  auto p = Process::Start(std::move(o));
  if (!p.ok()) {
    ADD_FAILURE() << p.status();
    return nullptr;
  }
  return *std::move(p);
}

std::unique_ptr<Process> NetnsCluster::Spawn(const std::string& host, const std::string& name,
                                             std::vector<std::string> argv,
                                             std::map<std::string, std::string> env) {
  return SpawnAsHost(net_->Wrap(host, std::move(argv)), HostDir(host), std::move(env), dir(), name);
}

absl::Status NetnsCluster::StartMaster(std::vector<std::string> extra, absl::Duration timeout) {
  if (master_) return absl::FailedPreconditionError("master already started");
  const std::string m = HostDir("master");
  master_args_ = {BinPath("taskq-master"),
                  "--listen",
                  absl::StrCat("0.0.0.0:", kMasterPort),
                  "--tls-cert",
                  m + "/master.pem",
                  "--tls-key",
                  m + "/master.key",
                  "--token-file",
                  TokenFile("master"),
                  "--port-file",
                  m + "/port"};
  master_args_.insert(master_args_.end(), extra.begin(), extra.end());
  if (auto s = StartMasterProcess(timeout); !s.ok()) return s;
  // "Copy that file to every host that runs a worker or the CLI."
  for (const NetHost& h : net_->hosts()) {
    if (h.name == "master") continue;
    if (auto s = CopyFile(TokenFile("master"), TokenFile(h.name), 0600); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status NetnsCluster::StartMasterProcess(absl::Duration timeout) {
  const std::string port_file = HostDir("master") + "/port";
  const absl::Time deadline = absl::Now() + timeout;
  std::remove(port_file.c_str());
  master_ = Spawn("master", NextName("master", "taskq-master"), master_args_);
  if (!master_) return absl::InternalError("cannot spawn taskq-master");
  WaitFor([&] { return !ReadFile(port_file).empty() || !master_->Running(); },
          deadline - absl::Now(), absl::Milliseconds(2));
  if (ReadFile(port_file).empty()) {
    return absl::InternalError(absl::StrCat("taskq-master did not start (",
                                            master_->Running() ? "no port file" : "exited",
                                            "): ", Tail(master_->Stderr(), 4000)));
  }
  // Listening, and reachable from the client host across the bridge.
  absl::Status reach = absl::DeadlineExceededError("not tried");
  WaitFor(
      [&] {
        auto fd = net_->ConnectFrom("client", master_ip(), kMasterPort, absl::Seconds(1));
        if (fd.ok()) ::close(*fd);
        reach = fd.status();
        return fd.ok();
      },
      std::max(deadline - absl::Now(), absl::Seconds(1)), absl::Milliseconds(20));
  return reach;
}

absl::Status NetnsCluster::RestartMaster(int signal, absl::Duration timeout) {
  if (!master_) return absl::FailedPreconditionError("master not started");
  master_->Kill(signal);
  if (!master_->Wait(kStopGrace).has_value()) {
    master_->Kill(SIGKILL);
    master_->Wait(kStopGrace);
  }
  old_masters_.push_back(std::move(master_));
  // The port is free once the old process is gone (the master binds with
  // SO_REUSEADDR); a failed start is retried a couple of times anyway.
  absl::Status s;
  for (int attempt = 0; attempt < 3; ++attempt) {
    s = StartMasterProcess(timeout);
    if (s.ok() || !master_ || master_->Running()) return s;
    old_masters_.push_back(std::move(master_));
  }
  return s;
}

Process* NetnsCluster::StartWorker(const std::string& host, std::vector<std::string> extra) {
  std::vector<std::string> argv = {BinPath("taskq-worker"), "--master",   client_master_,
                                   "--tls-ca",              CaFile(host), "--token-file",
                                   TokenFile(host),         "--queue",    "tasks"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = Spawn(host, NextName(host, "taskq-worker"), argv);
  if (!p) return nullptr;
  workers_.push_back(std::move(p));
  return workers_.back().get();
}

bool NetnsCluster::WaitWorkerConnected(Process* worker, absl::Duration timeout, int times) {
  if (worker == nullptr) return false;
  return WaitFor(
      [&] { return Count(worker->Stderr(), "connected to") >= static_cast<size_t>(times); },
      timeout, absl::Milliseconds(10));
}

std::unique_ptr<Process> NetnsCluster::StartCli(std::vector<std::string> args,
                                                const std::string& host) {
  std::vector<std::string> argv = {BinPath("taskq"), "--tls-ca", CaFile(host)};
  argv.insert(argv.end(), args.begin(), args.end());
  return Spawn(host, NextName(host, "taskq"), argv,
               {{"TASKQ_MASTER", client_master_}, {"TASKQ_TOKEN_FILE", TokenFile(host)}});
}

CliResult NetnsCluster::Cli(std::vector<std::string> args, absl::Duration timeout,
                            const std::string& host) {
  CliResult r;
  const std::string what = absl::StrJoin(args, " ");
  const absl::Time start = absl::Now();
  auto p = StartCli(std::move(args), host);
  if (!p) return r;
  return FinishCli(*p, start, timeout, absl::StrCat(Tail(what, 300), " on ", host));
}

Process* NetnsCluster::StartDelayProxy(int port, absl::Duration one_way) {
  const std::string port_file = absl::StrCat(HostDir("master"), "/proxy-", port);
  auto p = Spawn("master", NextName("master", "delay-proxy"),
                 {BinPath("taskq-delay-proxy"), "--listen", absl::StrCat(master_ip(), ":", port),
                  "--connect", absl::StrCat("127.0.0.1:", kMasterPort), "--delay-ms",
                  absl::StrCat(absl::ToInt64Milliseconds(one_way)), "--port-file", port_file});
  if (!p) return nullptr;
  if (!WaitFor([&] { return !ReadFile(port_file).empty() || !p->Running(); }, absl::Seconds(10)) ||
      !p->Running()) {
    ADD_FAILURE() << "taskq-delay-proxy did not start: " << p->Stderr();
    return nullptr;
  }
  proxies_.push_back(std::move(p));
  return proxies_.back().get();
}

NetnsCluster::~NetnsCluster() {
  // Workers first (they drain), then the master; one shared deadline.
  for (auto& w : workers_) w->Kill(SIGTERM);
  const absl::Time deadline = absl::Now() + kStopGrace;
  for (auto& w : workers_) {
    if (!w->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())).has_value()) {
      w->Kill(SIGKILL);
      w->Wait(kStopGrace);
    }
  }
  if (master_) master_->Stop(kStopGrace);
  DumpLogsIfFailed();
  ExpectNoSecretsInLogs(dir());
  proxies_.clear();
  workers_.clear();
  master_.reset();
  old_masters_.clear();
  net_.reset();  // kills whatever is left inside the hosts
}

void NetnsCluster::DumpLogsIfFailed() {
  if (!::testing::Test::HasFailure()) return;
  auto dump = [](Process* p) { DumpStderr("netns-cluster", p); };
  for (auto& m : old_masters_) dump(m.get());
  dump(master_.get());
  for (auto& w : workers_) dump(w.get());
  for (auto& p : proxies_) dump(p.get());
}

std::string CheckEachOnce(const std::vector<std::string>& lines,
                          const std::set<std::string>& expected) {
  std::map<std::string, int> seen;
  for (const std::string& line : lines) ++seen[line];
  std::vector<std::string> missing, repeated, unexpected;
  for (const std::string& e : expected) {
    if (!seen.contains(e)) missing.push_back(e);
  }
  for (const auto& [line, n] : seen) {
    if (!expected.contains(line)) unexpected.push_back(line);
    else if (n > 1) repeated.push_back(absl::StrCat(line, " (x", n, ")"));
  }
  if (missing.empty() && repeated.empty() && unexpected.empty()) return "";
  auto some = [](const std::vector<std::string>& v) {
    std::vector<std::string> head(v.begin(), v.begin() + std::min<size_t>(v.size(), 5));
    return absl::StrCat(v.size(), (v.empty() ? "" : " e.g. "), absl::StrJoin(head, " | "));
  };
  return absl::StrCat(lines.size(), " lines for ", expected.size(), " expected: missing ",
                      some(missing), "; repeated ", some(repeated), "; unexpected ",
                      some(unexpected));
}

}  // namespace taskq::testing
