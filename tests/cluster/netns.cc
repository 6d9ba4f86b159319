#include "tests/cluster/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace taskq::testing {
namespace {

constexpr char kNetnsDir[] = "/run/netns";
constexpr char kSubnet[] = "10.213.0.";

// --- Namespaces to tear down on a signal -------------------------------------
//
// A fixed table the signal handler can read without locks or allocation:
// a slot is claimed (kClaimed), filled, then published (kLive).

constexpr int kMaxSlots = 256;
enum SlotState : int { kFree = 0, kClaimed = 1, kLive = 2 };
struct Slot {
  std::atomic<int> state{kFree};
  char path[128];
  dev_t dev;
  ino_t ino;
};
Slot g_slots[kMaxSlots];
struct sigaction g_previous[3];
constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

// Writes the decimal digits of `n` at `out` (NUL-terminated); returns the end.
char* PutNumber(char* out, long n) {
  char digits[24];
  int len = 0;
  do {
    digits[len++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n > 0);
  while (len > 0) *out++ = digits[--len];
  *out = '\0';
  return out;
}

// SIGKILLs every process whose network namespace is (dev, ino). Only
// async-signal-safe calls: used from the signal handler too.
void KillMembers(dev_t dev, ino_t ino) {
  int dir = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  alignas(8) char buf[8192];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      struct Entry {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
      };
      const Entry* e = reinterpret_cast<const Entry*>(buf + at);
      at += e->reclen;
      long pid = 0;
      bool numeric = e->name[0] != '\0';
      for (const char* c = e->name; *c != '\0'; ++c) {
        if (*c < '0' || *c > '9') {
          numeric = false;
          break;
        }
        pid = pid * 10 + (*c - '0');
      }
      if (!numeric || pid == ::getpid()) continue;
      char path[64] = "/proc/";
      char* end = PutNumber(path + 6, pid);
      const char suffix[] = "/ns/net";
      for (size_t i = 0; i < sizeof suffix; ++i) end[i] = suffix[i];
      struct stat st;
      if (::stat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
        ::kill(static_cast<pid_t>(pid), SIGKILL);
      }
    }
  }
  ::close(dir);
}

// Unmounts and removes /run/netns/NAME (what `ip netns del` does); the
// namespace itself goes when its last process does.
void Unmount(const char* path) {
  ::umount2(path, MNT_DETACH);
  ::unlink(path);
}

void OnSignal(int sig) {
  for (Slot& slot : g_slots) {
    if (slot.state.load() != kLive) continue;
    KillMembers(slot.dev, slot.ino);
    Unmount(slot.path);
  }
  for (int i = 0; i < 3; ++i) {
    if (kSignals[i] == sig) ::sigaction(sig, &g_previous[i], nullptr);
  }
  ::raise(sig);  // delivered when this handler returns
}

void InstallSignalHandlersOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action = {};
    action.sa_handler = OnSignal;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &action, &g_previous[i]);
  });
}

// Publishes a namespace for the signal handler; returns its slot or -1.
int Register(const std::string& name) {
  const std::string path = absl::StrCat(kNetnsDir, "/", name);
  struct stat st;
  if (path.size() >= sizeof(Slot::path) || ::stat(path.c_str(), &st) != 0) return -1;
  for (int i = 0; i < kMaxSlots; ++i) {
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kClaimed)) continue;
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    g_slots[i].dev = st.st_dev;
    g_slots[i].ino = st.st_ino;
    g_slots[i].state.store(kLive);
    return i;
  }
  return -1;
}

bool IsRegistered(const std::string& name) {
  const std::string path = absl::StrCat(kNetnsDir, "/", name);
  for (Slot& slot : g_slots) {
    if (slot.state.load() == kLive && path == slot.path) return true;
  }
  return false;
}

void Unregister(const std::string& name) {
  const std::string path = absl::StrCat(kNetnsDir, "/", name);
  for (Slot& slot : g_slots) {
    if (slot.state.load() == kLive && path == slot.path) slot.state.store(kFree);
  }
}

// The processes inside namespace `name` (by /proc/PID/ns/net).
std::vector<pid_t> MembersOf(const std::string& name) {
  std::vector<pid_t> pids;
  struct stat ns;
  if (::stat(absl::StrCat(kNetnsDir, "/", name).c_str(), &ns) != 0) return pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    int pid;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid) || pid == ::getpid()) continue;
    struct stat st;
    if (::stat(absl::StrCat("/proc/", pid, "/ns/net").c_str(), &st) == 0 &&
        st.st_dev == ns.st_dev && st.st_ino == ns.st_ino) {
      pids.push_back(pid);
    }
  }
  return pids;
}

// Kills everything in the namespace, waits until it is empty, and deletes
// it. A killed process leaves the namespace when it dies, before it is
// reaped: the zombies of our children stay for their Process to reap.
void Destroy(const std::string& name) {
  const std::string path = absl::StrCat(kNetnsDir, "/", name);
  struct stat ns;
  if (::stat(path.c_str(), &ns) == 0) {
    bool empty = WaitFor(
        [&] {
          KillMembers(ns.st_dev, ns.st_ino);
          return MembersOf(name).empty();
        },
        absl::Seconds(10), absl::Milliseconds(5));
    if (!empty) ADD_FAILURE() << "processes survive SIGKILL in network namespace " << name;
  }
  Unregister(name);
  Unmount(path.c_str());
}

bool OnPath(const std::string& tool) {
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    if (::access(absl::StrCat(dir, "/", tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::atomic<int> g_networks{0};

}  // namespace

std::string TestNetwork::WhyUnavailable() {
  static const std::string why = [] () -> std::string {
    if (::geteuid() != 0) return "needs root to make network namespaces";
    for (const char* tool : {"ip", "nft", "setpriv"}) {
      if (!OnPath(tool)) {
        return absl::StrCat("`", tool, "` is not installed (iproute2, nftables, util-linux)");
      }
    }
    TempDir dir;
    ProcessOptions o;
    o.output_dir = dir.path();
    o.name = "probe";
    const std::string name = absl::StrCat("tq", ::getpid(), "-probe");
    o.argv = {"ip", "netns", "add", name};
    auto p = Process::Start(o);
    std::optional<int> rc = p.ok() ? (*p)->Wait(absl::Seconds(30)) : std::nullopt;
    if (rc != 0) {
      return absl::StrCat("`ip netns add` does not work here: ",
                          p.ok() ? (*p)->Stderr() : p.status().ToString());
    }
    Destroy(name);
    return "";
  }();
  return why;
}

void TestNetwork::SweepLeftovers() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kNetnsDir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 4 || name.compare(0, 2, "tq") != 0) continue;
    size_t dash = name.find('-');
    int pid;
    if (dash == std::string::npos || !absl::SimpleAtoi(name.substr(2, dash - 2), &pid)) continue;
    const bool dead = ::kill(pid, 0) != 0 && errno == ESRCH;
    // Our own pid on a name we did not make: a dead run that had our pid.
    const bool stale_ours = pid == ::getpid() && !IsRegistered(name);
    if (dead || stale_ours) {
      std::cerr << "[netns] sweeping " << name << ", left by a run that died\n";
      Destroy(name);
    }
  }
}

absl::StatusOr<std::unique_ptr<TestNetwork>> TestNetwork::Create(
    const std::vector<std::string>& host_names) {
  if (std::string why = WhyUnavailable(); !why.empty()) return absl::UnavailableError(why);
  if (host_names.empty() || host_names.size() > 200) {
    return absl::InvalidArgumentError("a test network has 1 to 200 hosts");
  }
  InstallSignalHandlersOnce();
  SweepLeftovers();
  std::unique_ptr<TestNetwork> net(new TestNetwork());
  absl::Status s = net->Build(host_names);
  if (!s.ok()) return s;  // the destructor removes what was made
  return net;
}

absl::Status TestNetwork::Run(std::vector<std::string> argv) {
  return Output(std::move(argv)).status();
}

absl::StatusOr<std::string> TestNetwork::Output(std::vector<std::string> argv) {
  ProcessOptions o;
  o.output_dir = logs_->path();
  o.name = absl::StrCat("cmd-", ++runs_);
  o.argv = std::move(argv);
  const std::string what = absl::StrJoin(o.argv, " ");
  auto p = Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  std::optional<int> rc = (*p)->Wait(absl::Seconds(30));
  if (rc == 0) return (*p)->Stdout();
  return absl::InternalError(absl::StrCat(what, ": ", rc ? absl::StrCat("exit ", *rc) : "timed out",
                                          ": ", (*p)->Stderr()));
}

absl::Status TestNetwork::Build(const std::vector<std::string>& host_names) {
  logs_ = std::make_unique<TempDir>();
  prefix_ = absl::StrCat("tq", ::getpid(), "-", ++g_networks, "-");
  bridge_ns_ = prefix_ + "net";
  auto add_ns = [&](const std::string& name) -> absl::Status {
    absl::Status s = Run({"ip", "netns", "add", name});
    if (!s.ok()) return s;
    created_.push_back(name);
    if (Register(name) < 0) return absl::InternalError("too many test namespaces at once");
    return absl::OkStatus();
  };
  if (auto s = add_ns(bridge_ns_); !s.ok()) return s;
  if (auto s = Run({"ip", "-n", bridge_ns_, "link", "add", "br0", "type", "bridge"}); !s.ok()) {
    return s;
  }
  if (auto s = Run({"ip", "-n", bridge_ns_, "link", "set", "br0", "up"}); !s.ok()) return s;

  // Per-host chains the forward hook jumps to: faults fill them.
  std::string rules = "table bridge tq {\n";
  for (size_t i = 0; i < host_names.size(); ++i) {
    absl::StrAppend(&rules, "  chain h_p", i + 1, " {\n  }\n");
  }
  absl::StrAppend(&rules, "  chain forward {\n    type filter hook forward priority 0; policy accept;\n");
  for (size_t i = 0; i < host_names.size(); ++i) {
    absl::StrAppend(&rules, "    iifname \"p", i + 1, "\" jump h_p", i + 1, "\n");
    absl::StrAppend(&rules, "    oifname \"p", i + 1, "\" jump h_p", i + 1, "\n");
  }
  absl::StrAppend(&rules, "  }\n}\n");
  const std::string rules_file = logs_->path() + "/bridge.nft";
  if (auto s = WriteFile(rules_file, rules); !s.ok()) return s;
  if (auto s = Run({"ip", "netns", "exec", bridge_ns_, "nft", "-f", rules_file}); !s.ok()) {
    return s;
  }

  for (size_t i = 0; i < host_names.size(); ++i) {
    NetHost h;
    h.name = host_names[i];
    h.netns = prefix_ + h.name;
    h.address = absl::StrCat(kSubnet, i + 1);
    h.bridge_port = absl::StrCat("p", i + 1);
    if (auto s = add_ns(h.netns); !s.ok()) return s;
    // Made directly inside the two namespaces: nothing appears on the real host.
    std::vector<std::vector<std::string>> steps = {
        {"ip", "link", "add", "eth0", "netns", h.netns, "type", "veth", "peer", "name",
         h.bridge_port, "netns", bridge_ns_},
        {"ip", "-n", bridge_ns_, "link", "set", h.bridge_port, "master", "br0", "up"},
        {"ip", "-n", h.netns, "addr", "add", h.address + "/24", "dev", "eth0"},
        {"ip", "-n", h.netns, "link", "set", "lo", "up"},
        {"ip", "-n", h.netns, "link", "set", "eth0", "up"},
    };
    for (auto& step : steps) {
      if (auto s = Run(std::move(step)); !s.ok()) return s;
    }
    hosts_.push_back(std::move(h));
  }
  for (const NetHost& h : hosts_) {
    if (auto s = WaitOperational(h); !s.ok()) return s;
  }
  return absl::OkStatus();
}

TestNetwork::~TestNetwork() { Teardown(); }

void TestNetwork::Teardown() {
  // Hosts first (their processes), the bridge last.
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) Destroy(*it);
  created_.clear();
}

const NetHost& TestNetwork::host(const std::string& name) const {
  for (const NetHost& h : hosts_) {
    if (h.name == name) return h;
  }
  ADD_FAILURE() << "no host named " << name << " in the test network";
  return hosts_.front();
}

std::vector<std::string> TestNetwork::Wrapper(const std::string& host) const {
  return {"ip", "netns", "exec", this->host(host).netns, "setpriv", "--pdeathsig", "KILL", "--"};
}

std::vector<std::string> TestNetwork::Wrap(const std::string& host,
                                           std::vector<std::string> argv) const {
  std::vector<std::string> out = Wrapper(host);
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

absl::Status TestNetwork::SetBridgeRules(const NetHost& h, const std::vector<std::string>& rules) {
  // One nft transaction: the chain never passes through a half-set state.
  std::string script = absl::StrCat("flush chain bridge tq h_", h.bridge_port, "\n");
  for (const std::string& rule : rules) {
    absl::StrAppend(&script, "add rule bridge tq h_", h.bridge_port, " ", rule, "\n");
  }
  const std::string file = absl::StrCat(logs_->path(), "/rules-", ++runs_, ".nft");
  if (auto s = WriteFile(file, script); !s.ok()) return s;
  return Run({"ip", "netns", "exec", bridge_ns_, "nft", "-f", file});
}

absl::Status TestNetwork::SetHostFirewall(const NetHost& h, bool reject) {
  // `add` then `delete`: removes the table whether or not it exists.
  std::string script = "add table inet tq\ndelete table inet tq\n";
  if (reject) {
    // The resets and ICMP errors the input chain sends must not be caught
    // by the output chain.
    absl::StrAppend(&script,
                    "table inet tq {\n"
                    "  chain input {\n"
                    "    type filter hook input priority 0; policy accept;\n"
                    "    iifname \"eth0\" meta l4proto tcp reject with tcp reset\n"
                    "    iifname \"eth0\" reject with icmpx type host-unreachable\n"
                    "  }\n"
                    "  chain output {\n"
                    "    type filter hook output priority 0; policy accept;\n"
                    "    oifname \"eth0\" tcp flags rst accept\n"
                    "    oifname \"eth0\" icmp type destination-unreachable accept\n"
                    "    oifname \"eth0\" meta l4proto tcp reject with tcp reset\n"
                    "    oifname \"eth0\" reject with icmpx type host-unreachable\n"
                    "  }\n"
                    "}\n");
  }
  const std::string file = absl::StrCat(logs_->path(), "/host-", ++runs_, ".nft");
  if (auto s = WriteFile(file, script); !s.ok()) return s;
  return Run({"ip", "netns", "exec", h.netns, "nft", "-f", file});
}

absl::Status TestNetwork::Heal(const std::string& name) {
  const NetHost& h = host(name);
  if (auto s = SetBridgeRules(h, {}); !s.ok()) return s;
  if (auto s = SetHostFirewall(h, false); !s.ok()) return s;
  if (auto s = Run({"ip", "-n", h.netns, "link", "set", "eth0", "up"}); !s.ok()) return s;
  return WaitOperational(h);
}

absl::Status TestNetwork::WaitOperational(const NetHost& h) {
  const auto is_up = [&](const std::string& ns, const std::string& dev) {
    absl::StatusOr<std::string> out = Output({"ip", "-n", ns, "-o", "link", "show", "dev", dev});
    return out.ok() && absl::StrContains(*out, " state UP ");
  };
  if (WaitFor([&] { return is_up(h.netns, "eth0") && is_up(bridge_ns_, h.bridge_port); },
              absl::Seconds(10))) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat("host ", h.name, ": eth0 not operationally up within 10 s"));
}

absl::Status TestNetwork::LinkDown(const std::string& name) {
  if (auto s = Heal(name); !s.ok()) return s;
  return Run({"ip", "-n", host(name).netns, "link", "set", "eth0", "down"});
}

absl::Status TestNetwork::BlackHole(const std::string& name) {
  if (auto s = Heal(name); !s.ok()) return s;
  return SetBridgeRules(host(name), {"drop"});
}

absl::Status TestNetwork::Reject(const std::string& name) {
  if (auto s = Heal(name); !s.ok()) return s;
  return SetHostFirewall(host(name), true);
}

absl::Status TestNetwork::Loss(const std::string& name, int percent) {
  if (percent < 0 || percent > 100) return absl::InvalidArgumentError("loss is 0..100 %");
  if (auto s = Heal(name); !s.ok()) return s;
  if (percent == 0) return absl::OkStatus();
  if (percent == 100) return SetBridgeRules(host(name), {"drop"});
  return SetBridgeRules(host(name), {absl::StrCat("numgen random mod 100 < ", percent, " drop")});
}

std::vector<pid_t> TestNetwork::Pids(const std::string& name) const {
  return MembersOf(host(name).netns);
}

absl::StatusOr<int> TestNetwork::SocketIn(const std::string& host) const {
  const std::string ns_path = absl::StrCat(kNetnsDir, "/", this->host(host).netns);
  absl::StatusOr<int> result = absl::InternalError("not run");
  // A socket belongs to the namespace it was made in: make it on a thread
  // that entered the host's namespace (the test's own threads stay put).
  std::thread([&] {
    int ns = ::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      result = absl::InternalError(absl::StrCat("enter ", ns_path, ": ", std::strerror(errno)));
    } else {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd >= 0) result = fd;
      else result = absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    }
    if (ns >= 0) ::close(ns);
  }).join();
  return result;
}

absl::StatusOr<int> TestNetwork::ListenIn(const std::string& host, int port) const {
  auto fd = SocketIn(host);
  if (!fd.ok()) return fd;
  sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, this->host(host).address.c_str(), &sa.sin_addr);
  int one = 1;
  ::setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(*fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(*fd, 64) != 0) {
    int err = errno;
    ::close(*fd);
    return absl::InternalError(absl::StrCat("listen on ", host, ":", port, ": ", std::strerror(err)));
  }
  return fd;
}

absl::StatusOr<int> TestNetwork::ConnectFrom(const std::string& from, const std::string& address,
                                             int port, absl::Duration timeout) const {
  auto socket = SocketIn(from);
  if (!socket.ok()) return socket;
  const int fd = *socket;
  sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", address));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(err)));
  }
  pollfd p = {fd, POLLOUT, 0};
  int ready = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (ready == 1 && err == 0) return fd;
  ::close(fd);
  if (ready == 0) return absl::DeadlineExceededError("connect timed out");
  return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(err)));
}

}  // namespace taskq::testing
