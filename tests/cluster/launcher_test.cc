// Scenario 6 of the multi-host cluster (issue 13): deploy/launch-workers.sh
// run from a client host against a real sshd (openssh-server) in two worker
// hosts, with a host key and a client key made for the test. Workers it
// starts serve tasks submitted from the client host; every way a host can
// fail (unknown or changed host key, missing, unexecutable or wrong binary,
// a worker that exits at once, TLS without the CA, a worker connected to
// another master than the one checked) ends in a non-zero exit and a
// message that says what to do.
//
// Hosts (tests/cluster/netns_cluster.h): master (README's recipe: TLS with
// the cluster's CA), worker1 and worker2 (sshd on port 2222, each in a
// private mount and UTS namespace: its own hostname, its own /run, and a
// home directory of its own from the test's temp dir bound over the login
// user's), client (runs the launcher and the CLI, with the token and CA the
// cluster copied there, or a join bundle made of them). ssh and scp read only the test's ssh_config
// (-F), known_hosts and key: the real ~/.ssh and the system's sshd are
// never touched. Everything runs inside the namespaces, which the network
// tears down (also on SIGINT/SIGTERM); each test kills the workers it left.
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/join_bundle.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

constexpr int kSshPort = 2222;
const char* const kWorkerHosts[] = {"worker1", "worker2"};

std::string Launcher() { return std::string(TASKQ_SOURCE_DIR) + "/deploy/launch-workers.sh"; }

struct RunResult {
  int exit_code = -1;  // -1: killed after its deadline
  std::string out, err;
};
std::string Describe(const RunResult& r) {
  return absl::StrCat("exit=", r.exit_code, "\nstdout:\n", r.out, "\nstderr:\n", r.err);
}

// What every test shares: the hosts and master, the sshds, the keys.
struct Site {
  std::string skip_reason;
  std::string setup_error;
  std::unique_ptr<NetnsCluster> cluster;
  std::vector<std::unique_ptr<Process>> sshds;  // declared after: stopped first
  std::string master_address;                   // HOST:PORT
  std::string token, ca;                        // on the client host
  std::string ssh_config;
  std::string login_home;  // the login user's home, as sshd sees it
  int runs = 0;

  const std::string& dir() const { return cluster->dir(); }
  TestNetwork& net() { return cluster->net(); }
  // What sshd's login home is on `host`: a directory of the test's.
  std::string Home(const std::string& host) const { return dir() + "/sshd-home-" + host; }
};
Site* site = nullptr;

class LauncherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    site = new Site;
    site->skip_reason = NetnsCluster::WhyUnavailable();
    if (site->skip_reason.empty()) {
      for (const char* tool : {"/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/scp",
                               "/usr/bin/ssh-keygen", "/usr/lib/openssh/sftp-server",
                               "/usr/bin/unshare"}) {
        if (::access(tool, X_OK) != 0) {
          site->skip_reason = absl::StrCat(tool, " is missing (tests/cluster.sh installs it)");
        }
      }
    }
    if (!site->skip_reason.empty()) return;
    absl::Status s = BuildSite();
    if (!s.ok()) site->setup_error = s.ToString();
  }

  static void TearDownTestSuite() {
    if (site == nullptr) return;
    // The sshds, then the cluster: it stops the master and deletes the
    // network, which kills whatever is left inside.
    site->sshds.clear();
    site->cluster.reset();
    delete site;
    site = nullptr;
  }

  void SetUp() override {
    if (!site->skip_reason.empty()) GTEST_SKIP() << site->skip_reason;
    ASSERT_TRUE(site->setup_error.empty()) << site->setup_error;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    remote_dir_ = absl::StrCat(".taskq-", info->name());
    known_hosts_ = absl::StrCat(site->dir(), "/known_hosts-", info->name());
    std::filesystem::remove(known_hosts_);
  }

  // Kills the workers a test left behind (in the worker hosts) and reaps
  // them: they are orphans, adopted by this process (the harness makes it a
  // subreaper).
  void TearDown() override {
    if (site == nullptr || !site->cluster) return;
    for (const char* host : kWorkerHosts) {
      for (pid_t pid : WorkerPids(host)) ::kill(pid, SIGKILL);
    }
    bool gone = WaitFor(
        [&] {
          bool none = true;
          for (const char* host : kWorkerHosts) {
            for (pid_t pid : WorkerPids(host)) {
              ::waitpid(pid, nullptr, WNOHANG);
              none = false;
            }
          }
          return none;
        },
        absl::Seconds(10));
    EXPECT_TRUE(gone) << "workers survived SIGKILL";
  }

  // ------------------------------------------------------------ set-up
  static absl::Status BuildSite() {
    site->cluster = std::make_unique<NetnsCluster>();
    if (auto s = site->cluster->Create(2); !s.ok()) return s;
    if (auto s = site->cluster->StartMaster(); !s.ok()) return s;
    site->master_address = site->cluster->master_address();
    site->token = site->cluster->TokenFile("client");
    site->ca = site->cluster->CaFile("client");
    const std::string d = site->dir();
    if (auto s = Tool("keygen-client", {"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                                        "-C", "taskq-launcher-test", "-f", d + "/client_key"});
        !s.ok()) {
      return s;
    }

    // An sshd in each worker host.
    const passwd* pw = ::getpwuid(::getuid());
    if (pw == nullptr) return absl::InternalError("no passwd entry for this user");
    site->login_home = pw->pw_dir;
    std::string ssh_config;
    for (const char* host : kWorkerHosts) {
      const std::string address = site->net().host(host).address;
      const std::string host_key = d + "/host_key-" + host;
      if (auto s = Tool(absl::StrCat("keygen-", host),
                        {"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key});
          !s.ok()) {
        return s;
      }
      std::filesystem::create_directories(site->Home(host));
      std::filesystem::copy_file(d + "/client_key.pub", d + "/authorized_keys-" + host,
                                 std::filesystem::copy_options::overwrite_existing);
      const std::string config = d + "/sshd_config-" + host;
      // StrictModes off: the key files live under /tmp (world-writable).
      if (auto s = WriteFile(config, absl::StrCat(
              "ListenAddress ", address, ":", kSshPort, "\n",
              "HostKey ", host_key, "\n",
              "AuthorizedKeysFile ", d, "/authorized_keys-", host, "\n",
              "StrictModes no\nUsePAM no\nPasswordAuthentication no\n",
              "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
              "PidFile none\nSubsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n"));
          !s.ok()) {
        return s;
      }
      // Private mount and UTS namespaces: the host's own name, an empty
      // /run with sshd's privilege-separation directory, its own home.
      auto sshd = site->cluster->Spawn(host, absl::StrCat(host, "-sshd"), {
          "/usr/bin/unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh",
          "-c",
          "hostname \"$1\" && mount -t tmpfs -o mode=755 tmpfs /run && mkdir /run/sshd && "
          "mount --bind \"$2\" \"$3\" && exec /usr/sbin/sshd -D -e -f \"$4\"",
          "sh", host, site->Home(host), site->login_home, config});
      if (!sshd) return absl::InternalError("cannot start sshd");
      Process* p = sshd.get();
      site->sshds.push_back(std::move(sshd));
      bool up = WaitFor(
          [&] {
            auto fd = site->net().ConnectFrom("client", address, kSshPort, absl::Seconds(1));
            if (fd.ok()) ::close(*fd);
            return fd.ok() || !p->Running();
          },
          absl::Seconds(30));
      if (!up || !p->Running()) {
        return absl::InternalError(absl::StrCat("sshd in ", host, " did not start:\n",
                                                p->Stderr()));
      }
      absl::StrAppend(&ssh_config, "Host ", host, "\n  HostName ", address, "\n");
    }
    site->ssh_config = d + "/ssh_config";
    return WriteFile(site->ssh_config, absl::StrCat(
        ssh_config, "Host *\n  Port ", kSshPort, "\n  User ", pw->pw_name,
        "\n  IdentityFile ", d, "/client_key\n  IdentitiesOnly yes\n",
        "  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 10\n  LogLevel ERROR\n"));
  }

  // Runs `argv` on `host` to its end (the cluster's environment for that
  // host, no ssh agent, the taskq binaries first in PATH).
  static RunResult Run(const std::string& host, const std::string& name,
                       std::vector<std::string> argv, std::map<std::string, std::string> env = {},
                       absl::Duration timeout = absl::Seconds(120)) {
    RunResult r;
    env.emplace("PATH", BinDir() + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    env.emplace("SSH_AUTH_SOCK", "");
    // The launcher's temporary files (and ssh's sockets) in the test's dir.
    env.emplace("TMPDIR", site->dir());
    auto p = site->cluster->Spawn(host, absl::StrCat(host, "-", name, "-", ++site->runs),
                                  std::move(argv), std::move(env));
    if (!p) return r;
    std::optional<int> status = p->Wait(timeout);
    if (!status) {
      ADD_FAILURE() << name << " ran past " << timeout;
      p->Kill(SIGKILL);
      p->Wait(absl::Seconds(10));
    }
    r.exit_code = status.value_or(-1);
    r.out = p->Stdout();
    r.err = p->Stderr();
    return r;
  }

  static absl::Status Tool(const std::string& name, std::vector<std::string> argv) {
    RunResult r = Run("client", name, std::move(argv));
    if (r.exit_code == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(name, " failed: ", Describe(r)));
  }

  // ------------------------------------------------------------ helpers
  // The launcher, run on the client host with the test's ssh_config.
  RunResult Launch(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {"/bin/bash", Launcher(), "--ssh-config", site->ssh_config,
                                     "--ssh-option", "UserKnownHostsFile=" + known_hosts_};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run("client", "launcher", argv, std::move(env));
  }
  // The options of a start that works, before the hosts.
  std::vector<std::string> StartArgs(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {
        "--master", site->master_address, "--token-file", site->token, "--tls-ca", site->ca,
        "--worker-bin", BinPath("taskq-worker"), "--remote-dir", remote_dir_,
        "--accept-new-host-keys"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }
  // The CLI on the client host.
  RunResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {BinPath("taskq"), "--master", site->master_address,
                                     "--token-file", site->token, "--tls-ca", site->ca};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run("client", "cli", argv);
  }
  // The master's WORKERS column for `queue` (0 if it is not listed; -1 if
  // the CLI failed).
  long WorkersOnMaster(const std::string& queue = "tasks") {
    RunResult r = Cli({"queue", "list"});
    if (r.exit_code != 0) {
      ADD_FAILURE() << Describe(r);
      return -1;
    }
    for (const std::string& line : Lines(r.out)) {
      std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
      long n = 0;
      if (cols.size() >= 6 && cols[0] == queue && absl::SimpleAtoi(cols[5], &n)) return n;
    }
    return 0;
  }
  // taskq-worker processes running inside a host.
  static std::vector<pid_t> WorkerPids(const std::string& host) {
    std::vector<pid_t> pids;
    for (pid_t pid : site->net().Pids(host)) {
      if (absl::StripAsciiWhitespace(ReadFile(absl::StrCat("/proc/", pid, "/comm"))) ==
          "taskq-worker") {
        pids.push_back(pid);
      }
    }
    return pids;
  }
  // A file in the launcher's directory on a host (the hosts' homes are in
  // the test's temp dir).
  std::string RemoteFile(const std::string& host, const std::string& name) const {
    return absl::StrCat(site->Home(host), "/", remote_dir_, "/", name);
  }
  bool NoWorkersAnywhere() {
    return WorkerPids("worker1").empty() && WorkerPids("worker2").empty();
  }

  std::string remote_dir_;
  std::string known_hosts_;
};

// The happy path end to end: start (accepting the new host keys), serve,
// list, stop; a second start keeps the first workers' logs.
TEST_F(LauncherTest, StartsWorkersThatServeThenListsAndStopsThem) {
  RunResult r = Launch(StartArgs({"--count", "2", "worker1", "worker2"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Count(r.out, "started worker"), 4u) << r.out;
  EXPECT_EQ(WorkersOnMaster(), 4);
  EXPECT_EQ(WorkerPids("worker1").size(), 2u);
  EXPECT_EQ(WorkerPids("worker2").size(), 2u);

  // The token is on no command line and in no output.
  const std::string token(absl::StripAsciiWhitespace(ReadFile(site->token)));
  ASSERT_FALSE(token.empty());
  EXPECT_FALSE(absl::StrContains(r.out + r.err, token));
  for (const char* host : kWorkerHosts) {
    for (pid_t pid : site->net().Pids(host)) {
      EXPECT_FALSE(absl::StrContains(ReadFile(absl::StrCat("/proc/", pid, "/cmdline")), token));
    }
    EXPECT_EQ(ReadFile(RemoteFile(host, "token")), ReadFile(site->token));
    EXPECT_EQ(std::filesystem::status(RemoteFile(host, "token")).permissions(),
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }

  // They serve: 200 tasks from the client host, every result back once.
  std::vector<std::string> submit = {"submit", "--queue", "tasks", "--handler", "square",
                                     "--wait"};
  std::set<std::string> want;
  for (int i = 1; i <= 200; ++i) {
    submit.push_back(absl::StrCat(i));
    want.insert(absl::StrCat(i, " * ", i, " = ", i * i));
  }
  r = Cli(submit);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  EXPECT_EQ(lines.size(), 200u);
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()), want);

  // --list: each worker, running and connected, and the master's count.
  r = Launch({"--list", "--master", site->master_address, "--token-file", site->token,
              "--tls-ca", site->ca, "--remote-dir", remote_dir_, "worker1", "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  int running_and_connected = 0;
  for (const std::string& line : Lines(r.out)) {
    if (absl::StartsWith(line, "  worker ") && absl::StrContains(line, " running ") &&
        absl::EndsWith(line, " connected")) {
      ++running_and_connected;
    }
  }
  EXPECT_EQ(running_and_connected, 4) << r.out;
  for (const char* id : {"worker1-1", "worker1-2", "worker2-1", "worker2-2"}) {
    EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("id ", id))) << r.out;
  }
  EXPECT_TRUE(absl::StrContains(r.out, "queue tasks has 4 worker(s) connected")) << r.out;

  // --stop: SIGTERM, waits for them; the master no longer lists them.
  r = Launch({"--stop", "--remote-dir", remote_dir_, "worker1", "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Count(r.out, "2 worker(s) stopped"), 2u) << r.out;
  EXPECT_TRUE(NoWorkersAnywhere());
  EXPECT_TRUE(WaitFor([&] { return WorkersOnMaster() == 0; }, absl::Seconds(20)));

  // Started again: the previous logs are kept.
  r = Launch(StartArgs({"--count", "2", "worker1", "worker2"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(WorkersOnMaster(), 4);
  EXPECT_TRUE(absl::StrContains(ReadFile(RemoteFile("worker1", "worker-1.log.1")),
                                "connected to the master worker=\"worker1-1\""));
}

// --join ships one bundle instead of the token and the CA: each host gets
// it 0600, the workers start with --join alone (no secret on a command
// line) and serve; the check reads the counts with the same bundle.
TEST_F(LauncherTest, ShipsAJoinBundleInsteadOfTokenAndCa) {
  // The site's master token (an admin credential) and CA in one bundle.
  v1::JoinBundle bundle;
  bundle.add_master(site->master_address);
  bundle.set_ca_pem(ReadFile(site->ca));
  bundle.set_credential("master-token");
  const std::string token(absl::StripAsciiWhitespace(ReadFile(site->token)));
  bundle.set_token(token);
  const std::string path = site->dir() + "/launcher.join";
  ASSERT_TRUE(WriteJoinBundle(path, bundle).ok());

  RunResult r = Launch({"--join", path, "--worker-bin", BinPath("taskq-worker"), "--remote-dir",
                        remote_dir_, "--accept-new-host-keys", "worker1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "the master lists the new worker(s)")) << r.out;
  EXPECT_EQ(WorkersOnMaster(), 1);
  EXPECT_FALSE(absl::StrContains(r.out + r.err, token));
  EXPECT_EQ(ReadFile(RemoteFile("worker1", "join")), ReadFile(path));
  EXPECT_EQ(std::filesystem::status(RemoteFile("worker1", "join")).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  for (pid_t pid : WorkerPids("worker1")) {
    const std::string cmdline = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
    EXPECT_TRUE(absl::StrContains(cmdline, "--join")) << cmdline;
    EXPECT_FALSE(absl::StrContains(cmdline, "--token-file")) << cmdline;
  }
  r = Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait", "1", "2", "3"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Lines(r.out).size(), 3u) << r.out;

  // A worker credential's bundle, made by `credential create --bundle` (the
  // CA from this CLI's --tls-ca: the site's master was not made by init).
  // It may not list queues: only the workers' logs are checked, and the
  // launcher says so; --check-join with the admin bundle checks the counts.
  const std::string worker_bundle = site->dir() + "/launcher-worker.join";
  r = Cli({"credential", "create", "launcher-w", "--role", "worker", "--queues", "tasks",
           "--bundle", worker_bundle, "--bundle-master", site->master_address});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  r = Launch({"--join", worker_bundle, "--worker-bin", BinPath("taskq-worker"), "--remote-dir",
              remote_dir_, "--accept-new-host-keys", "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "the master's worker counts are not checked")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "say they are connected")) << r.out;
  EXPECT_TRUE(WaitFor([&] { return WorkersOnMaster() == 2; }, absl::Seconds(20)));
  r = Launch({"--stop", "--remote-dir", remote_dir_, "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  r = Launch({"--join", worker_bundle, "--check-join", path, "--worker-bin",
              BinPath("taskq-worker"), "--remote-dir", remote_dir_, "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "the master lists the new worker(s)")) << r.out;

  // A bundle others may read is refused before anything is copied.
  r = Launch({"--stop", "--remote-dir", remote_dir_, "worker2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  r = Launch({"--join", path, "--remote-dir", remote_dir_, "worker2"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "run: chmod 600 " + path)) << r.err;
  EXPECT_TRUE(WorkerPids("worker2").empty());
}

// --stop waits --stop-timeout for a worker finishing a long task, then says
// so and exits non-zero; the worker keeps draining.
TEST_F(LauncherTest, StopThatTimesOutFailsLoudly) {
  RunResult r = Launch(StartArgs({"--queue", "slow", "worker1"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  r = Cli({"submit", "--queue", "slow", "--handler", "sleep", "60"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_TRUE(WaitFor(
      [&] {
        RunResult stats = Cli({"queue", "stats", "slow"});
        return absl::StrContains(stats.out, "\nleased: 1\n");
      },
      absl::Seconds(20)));
  r = Launch({"--stop", "--stop-timeout", "1", "--remote-dir", remote_dir_, "worker1"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "worker1: FAILED: worker 1 (pid ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "still running after 1 s (--stop-timeout)")) << r.err;
  EXPECT_EQ(WorkerPids("worker1").size(), 1u);
}

// A worker that crashed is restarted; its log is kept, not overwritten.
TEST_F(LauncherTest, RestartAfterACrashKeepsTheCrashedWorkersLog) {
  RunResult r = Launch(StartArgs({"worker1"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<pid_t> pids = WorkerPids("worker1");
  ASSERT_EQ(pids.size(), 1u);
  const std::string crashed_log = ReadFile(RemoteFile("worker1", "worker-1.log"));
  ASSERT_TRUE(absl::StrContains(crashed_log, "connected to")) << crashed_log;
  ::kill(pids[0], SIGKILL);
  ASSERT_TRUE(WaitFor([&] {
    ::waitpid(pids[0], nullptr, WNOHANG);
    return WorkerPids("worker1").empty();
  }, absl::Seconds(10)));

  r = Launch(StartArgs({"worker1"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "worker 1 (pid " + std::to_string(pids[0]) +
                                           ") had exited; its log is kept as"))
      << r.out;
  EXPECT_EQ(ReadFile(RemoteFile("worker1", "worker-1.log.1")), crashed_log);
  EXPECT_EQ(WorkerPids("worker1").size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return WorkersOnMaster() == 1; }, absl::Seconds(20)));
}

// First contact without --accept-new-host-keys: ssh refuses, the launcher
// says how to accept the key and starts nothing. A changed key is refused
// even with --accept-new-host-keys.
TEST_F(LauncherTest, UnknownOrChangedHostKeyFailsLoudly) {
  std::vector<std::string> args = StartArgs({"worker1", "worker2"});
  args.erase(std::find(args.begin(), args.end(), "--accept-new-host-keys"));
  RunResult r = Launch(args);
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "worker1: FAILED: ssh does not know worker1's host key"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "Host key verification failed")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--accept-new-host-keys")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED on 2 of 2 host(s)")) << r.err;
  EXPECT_TRUE(NoWorkersAnywhere());

  // worker1's key recorded as another one: a changed key.
  const std::string other = site->dir() + "/other_key";
  std::filesystem::remove(other);
  std::filesystem::remove(other + ".pub");
  ASSERT_TRUE(Tool("keygen-other", {"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                                    other}).ok());
  std::vector<std::string> pub = absl::StrSplit(ReadFile(other + ".pub"), ' ');
  ASSERT_GE(pub.size(), 2u);
  ASSERT_TRUE(WriteFile(known_hosts_, absl::StrCat("[", site->net().host("worker1").address, "]:",
                                                   kSshPort, " ", pub[0], " ", pub[1], "\n"))
                  .ok());
  r = Launch(StartArgs({"worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "host key has CHANGED")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "ssh-keygen -R")) << r.err;
  EXPECT_TRUE(NoWorkersAnywhere());
}

// A --worker-bin that does not exist, is not executable, or is not
// taskq-worker: the host fails before anything is started.
TEST_F(LauncherTest, MissingOrBrokenWorkerBinaryFailsLoudly) {
  RunResult r = Launch(StartArgs({"--worker-bin", "/nonexistent/taskq-worker", "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(
      r.err, "worker1: FAILED: /nonexistent/taskq-worker does not exist on worker1"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--worker-bin")) << r.err;

  r = Launch(StartArgs({"--worker-bin", "no-such-taskq-worker", "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "no-such-taskq-worker is not in worker1's PATH")) << r.err;

  const std::string not_executable = site->Home("worker1") + "/taskq-worker.copy";
  std::filesystem::copy_file(BinPath("taskq-worker"), not_executable,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::permissions(not_executable, std::filesystem::perms::owner_read |
                                                   std::filesystem::perms::owner_write);
  // The path as the remote host sees it: under the login user's home.
  const std::string remote_path = site->login_home + "/taskq-worker.copy";
  r = Launch(StartArgs({"--worker-bin", remote_path, "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, remote_path + " on worker1 is not an executable file"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "chmod 755")) << r.err;

  r = Launch(StartArgs({"--worker-bin", "/bin/true", "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "/bin/true on worker1 does not run as taskq-worker"))
      << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "started worker")) << r.out;
  EXPECT_TRUE(NoWorkersAnywhere());
}

// A worker that exits right after start (here: a flag it refuses): the
// end of its log is shown.
TEST_F(LauncherTest, WorkerThatExitsAtOnceFailsLoudlyWithItsLog) {
  RunResult r = Launch(StartArgs({"--allow-exec-args", "nosuch", "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "worker 1 on worker1 exited right after start")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "no --allow-exec command has that name")) << r.err;
  EXPECT_TRUE(NoWorkersAnywhere());
}

// --tls without --tls-ca: this host trusts the master (TASKQ_TLS_CA), the
// workers' hosts do not. Seen in the worker's log, said, and the worker
// stopped, well before --wait runs out.
TEST_F(LauncherTest, TlsWithoutTheCaFailsLoudly) {
  std::vector<std::string> args = StartArgs({"--tls", "--wait", "60", "worker1"});
  auto ca = std::find(args.begin(), args.end(), "--tls-ca");
  args.erase(ca, ca + 2);
  const absl::Time start = absl::Now();
  RunResult r = Launch(args, {{"TASKQ_TLS_CA", site->ca}});
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "worker 1 on worker1 cannot connect to the master")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "certificate verify failed")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "no --tls-ca was given: pass --tls-ca FILE")) << r.err;
  EXPECT_TRUE(NoWorkersAnywhere());

  // Without --tls at all, this host cannot check the master: said before
  // any host is touched.
  args = StartArgs({"worker1"});
  ca = std::find(args.begin(), args.end(), "--tls-ca");
  args.erase(ca, ca + 2);
  const absl::Time precheck = absl::Now();
  r = Launch(args);
  // At once: the CLI is told not to retry (the launcher does).
  EXPECT_LT(absl::Now() - precheck, absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "cannot reach the master")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "add --tls and --tls-ca FILE")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "Starting")) << r.out;
}

// Workers that are up but connected to another master than the one this
// host checks: the check goes through the master, so it fails.
TEST_F(LauncherTest, WorkersTheCheckedMasterDoesNotListFail) {
  const std::string d = site->dir();
  const std::string port_file = d + "/other.port";
  const std::string m = site->cluster->HostDir("master");
  auto other = site->cluster->Spawn("master", "other-master", {
      BinPath("taskq-master"), "--listen", site->cluster->master_ip() + ":0",
      "--port-file", port_file, "--token-file", site->cluster->TokenFile("master"),
      "--data-dir", d + "/other-data", "--tls-cert", m + "/master.pem",
      "--tls-key", m + "/master.key"});
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(WaitFor([&] { return absl::EndsWith(ReadFile(port_file), "\n"); },
                      absl::Seconds(30)));
  const std::string other_address(absl::StripAsciiWhitespace(ReadFile(port_file)));

  RunResult r = Launch(StartArgs({"--check-master", other_address, "--wait", "3", "worker1"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "does not list the new worker(s) of worker1")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "say they are connected to " + site->master_address))
      << r.err;
  EXPECT_TRUE(NoWorkersAnywhere());
  EXPECT_EQ(other->Stop(), 0);
}

// --dry-run runs nothing and prints a script; pasted into bash, it starts
// the workers.
TEST_F(LauncherTest, DryRunPrintsCommandsThatCanBePasted) {
  RunResult r =
      Launch(StartArgs({"--dry-run", "--allow-exec", "say=/bin/echo \"it's\"", "worker1"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_FALSE(std::filesystem::exists(RemoteFile("worker1", "")));
  EXPECT_TRUE(NoWorkersAnywhere());
  EXPECT_TRUE(absl::StrContains(r.out, "\nscp -q -F " + site->ssh_config)) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\nssh -F " + site->ssh_config)) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, " --retry-for 0 queue list\n")) << r.out;
  const std::string token(absl::StripAsciiWhitespace(ReadFile(site->token)));
  EXPECT_FALSE(absl::StrContains(r.out, token));

  const std::string script = site->dir() + "/dry-run.sh";
  ASSERT_TRUE(WriteFile(script, r.out, 0700).ok());
  RunResult pasted = Run("client", "pasted", {"/bin/bash", "-e", script});
  ASSERT_EQ(pasted.exit_code, 0) << Describe(pasted);
  EXPECT_TRUE(absl::StrContains(pasted.out, "started 1 ")) << pasted.out;
  EXPECT_TRUE(WaitFor([&] { return WorkersOnMaster() == 1; }, absl::Seconds(20)))
      << ReadFile(RemoteFile("worker1", "worker-1.log"));
  EXPECT_EQ(WorkerPids("worker1").size(), 1u);
  // The quoting survived both shells: the worker got the command as given.
  r = Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg", "say", "--wait", "x"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StartsWith(r.out, "it's")) << Describe(r);
}

}  // namespace
}  // namespace taskq::testing
