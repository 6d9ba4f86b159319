#include "master/init_command.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <CLI/CLI.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/join_bundle.h"
#include "common/x509.h"
#include "master/credentials.h"
#include "master/tls_config.h"
#include "common/channel.h"
#include "common/private_file.h"
#include "common/read_file.h"

namespace taskq {

namespace {

// The CA outlives many server certificates; a server certificate is
// rotated with `init --rotate-server-cert` before it ends.
constexpr absl::Duration kCaValidity = absl::Hours(24 * 3650);
constexpr absl::Duration kServerCertValidity = absl::Hours(24 * 825);
// <data-dir>/credentials (master/credentials.h) and the admin's bundle.
constexpr char kCredentialsFile[] = "credentials";
constexpr char kAdminBundleFile[] = "admin.join";
constexpr char kAdminCredential[] = "admin";

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(errno)));
}

// Creates `dir` (and missing parents) 0700, or tightens an existing one to
// 0700: it holds the CA key and the credentials.
absl::Status MakePrivateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno == ENOENT) {
      const size_t slash = dir.find_last_of('/');
      if (slash == std::string::npos || slash == 0) return ErrnoError("create directory", dir);
      if (absl::Status s = MakePrivateDir(dir.substr(0, slash)); !s.ok()) return s;
      if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        return ErrnoError("create directory", dir);
      }
    } else if (errno != EEXIST) {
      return ErrnoError("create directory", dir);
    }
  }
  if (::chmod(dir.c_str(), 0700) != 0) return ErrnoError("make private (0700)", dir);
  return absl::OkStatus();
}

// What a certificate can name: letters, digits, '-' and '.'.
bool IsCertificateName(absl::string_view name) {
  return !name.empty() && name.size() <= 253 &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
         });
}

// The host's names (gethostname and its canonical name) and addresses
// (every interface's, except IPv6 link-local ones, which need a scope a
// certificate cannot name).
std::vector<std::string> OwnNamesAndAddresses() {
  std::vector<std::string> out;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) == 0 && IsCertificateName(name)) {
    out.push_back(name);
    addrinfo hints{};
    hints.ai_flags = AI_CANONNAME;
    hints.ai_family = AF_UNSPEC;
    addrinfo* info = nullptr;
    if (::getaddrinfo(name, nullptr, &hints, &info) == 0) {
      if (info && info->ai_canonname && IsCertificateName(info->ai_canonname)) {
        out.push_back(info->ai_canonname);
      }
      ::freeaddrinfo(info);
    }
  }
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i; i = i->ifa_next) {
      if (!i->ifa_addr) continue;
      char text[INET6_ADDRSTRLEN] = {};
      if (i->ifa_addr->sa_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
        ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
      } else if (i->ifa_addr->sa_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
        if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) continue;
        ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      } else {
        continue;
      }
      if (text[0]) out.push_back(text);
    }
    ::freeifaddrs(ifs);
  }
  return out;
}

// --host entries, then the host's own, then loopback; each once.
std::vector<std::string> CertificateHosts(const std::vector<std::string>& given) {
  std::vector<std::string> hosts;
  auto add = [&hosts](const std::string& h) {
    if (std::find(hosts.begin(), hosts.end(), h) == hosts.end()) hosts.push_back(h);
  };
  for (const std::string& h : given) add(h);
  for (const std::string& h : OwnNamesAndAddresses()) add(h);
  for (const char* h : {"localhost", "127.0.0.1", "::1"}) add(h);
  return hosts;
}

absl::StatusOr<std::vector<std::string>> ReadHostsFile(const std::string& path) {
  if (!Exists(path)) return std::vector<std::string>{};
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::vector<std::string> hosts;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) hosts.emplace_back(line);
  }
  return hosts;
}

// Makes the server key and certificate from `ca` and puts them in place:
// key first, then certificate, each by rename.
absl::StatusOr<std::string> WriteServerCert(const std::string& dir, const KeyAndCert& ca,
                                            const std::vector<std::string>& given_hosts) {
  const std::vector<std::string> hosts = CertificateHosts(given_hosts);
  auto server = MakeServerCert(ca, hosts, kServerCertValidity);
  if (!server.ok()) return server.status();
  if (absl::Status s = ReplacePrivateFile(absl::StrCat(dir, "/", kServerKeyFile), server->key_pem);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ReplacePrivateFile(absl::StrCat(dir, "/", kServerCertFile), server->cert_pem);
      !s.ok()) {
    return s;
  }
  auto fingerprint = CertificateSha256Hex(server->cert_pem);
  if (!fingerprint.ok()) return fingerprint.status();
  return absl::StrCat("  ", kServerCertFile, "  the master's certificate, valid until ",
                      absl::FormatTime("%Y-%m-%d", absl::Now() + kServerCertValidity,
                                       absl::UTCTimeZone()),
                      ", for: ", absl::StrJoin(hosts, ", "), "\n              SHA-256 ",
                      *fingerprint, "\n  ", kServerKeyFile, "  its private key\n");
}


std::string NextSteps(const InitOptions& options, const std::string& dir) {
  const std::string host = options.hosts.empty() ? "127.0.0.1" : options.hosts.front();
  const std::string address = JoinHostPort(host, options.port);
  const std::string listen = options.hosts.empty() ? absl::StrCat("127.0.0.1:", options.port)
                                                   : absl::StrCat("0.0.0.0:", options.port);
  return absl::StrCat(
      "Next:\n  taskq-master --data-dir ", options.data_dir, " --listen ", listen,
      "\n  taskq --join ", options.data_dir, "/", kAdminBundleFile, " queue list",
      "\n  taskq --join ", options.data_dir, "/", kAdminBundleFile,
      " credential create w1 --role worker --queues tasks --bundle w1.join",
      "\n  taskq-worker --join w1.join      (on a worker host, after copying w1.join there)\n",
      "The master serves TLS on every address from now on. Without a bundle, clients need ",
      dir, "/", kCaCertFile, " (--tls-ca; not the key) and --master ", address, ".\n");
}

// Creates the admin credential offline in <data-dir>/credentials and
// writes its join bundle (the --host names at --port, else 127.0.0.1, the
// CA, the token). The token is shown nowhere else.
absl::StatusOr<std::string> MakeAdminBundle(const InitOptions& options, const KeyAndCert& ca) {
  auto table = CredentialTable::Open(absl::StrCat(options.data_dir, "/", kCredentialsFile), "");
  if (!table.ok()) return table.status();
  v1::CreateCredentialRequest request;
  request.set_role(v1::ROLE_ADMIN);
  request.add_queues("*");
  // A data dir that already has an "admin" (made through a running
  // master) keeps it; this one gets a name of its own.
  absl::StatusOr<v1::CreateCredentialResponse> made = absl::UnknownError("not tried");
  for (const std::string& name :
       {std::string(kAdminCredential),
        absl::StrCat(kAdminCredential, "-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(),
                                                             absl::UTCTimeZone()))}) {
    request.set_name(name);
    made = (*table)->Create(request, "taskq-master init", &ca);
    if (!absl::IsAlreadyExists(made.status())) break;
  }
  if (!made.ok()) return made.status();
  v1::JoinBundle bundle;
  if (options.hosts.empty()) {
    bundle.add_master(JoinHostPort("127.0.0.1", options.port));
  } else {
    for (const std::string& host : options.hosts) bundle.add_master(JoinHostPort(host, options.port));
  }
  bundle.set_ca_pem(ca.cert_pem);
  bundle.set_credential(made->credential().name());
  bundle.set_token(made->token());
  const std::string path = absl::StrCat(options.data_dir, "/", kAdminBundleFile);
  if (absl::Status s = WriteJoinBundle(path, bundle); !s.ok()) return s;
  return absl::StrCat("  ", path, "\n              credential \"", made->credential().name(),
                      "\" (role admin, every queue) with the CA and the masters ",
                      absl::StrJoin(bundle.master(), ", "),
                      ": taskq --join FILE ... (keep it private: it holds the token)\n");
}

}  // namespace

absl::StatusOr<std::string> RunInit(const InitOptions& options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("init needs --data-dir");
  const std::string dir = TlsDir(options.data_dir);
  const std::string ca_cert = absl::StrCat(dir, "/", kCaCertFile);
  const std::string ca_key = absl::StrCat(dir, "/", kCaKeyFile);
  const std::string hosts_file = absl::StrCat(dir, "/", kHostsFile);
  const bool have_ca = Exists(ca_cert) || Exists(ca_key);

  if (options.rotate_server_cert) {
    if (!have_ca) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " has no CA to sign a new server certificate: run `taskq-master init --data-dir ",
          options.data_dir, "` first"));
    }
    KeyAndCert ca;
    auto cert = ReadFileToString(ca_cert);
    if (!cert.ok()) return cert.status();
    auto key = ReadFileToString(ca_key);
    if (!key.ok()) return key.status();
    ca = {*std::move(key), *std::move(cert)};
    std::vector<std::string> hosts = options.hosts;
    if (hosts.empty()) {
      auto saved = ReadHostsFile(hosts_file);
      if (!saved.ok()) return saved.status();
      hosts = *std::move(saved);
    } else if (absl::Status s = ReplacePrivateFile(hosts_file, absl::StrCat(absl::StrJoin(hosts, "\n"), "\n"));
               !s.ok()) {
      return s;
    }
    auto made = WriteServerCert(dir, ca, hosts);
    if (!made.ok()) return made.status();
    return absl::StrCat("taskq-master init: new server certificate in ", dir, ":\n", *made,
                        "A running master serves it to new connections within ",
                        absl::FormatDuration(kTlsRefreshInterval + absl::Seconds(1)),
                        "; open connections keep the old one until they reconnect.\n");
  }
  if (have_ca) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " already has a CA, which every client of this master trusts; init does not "
             "replace it. For a new server certificate from it: taskq-master init --data-dir ",
        options.data_dir,
        " --rotate-server-cert [--host ...]. To start over, remove ", dir,
        " (every client then needs the new CA and new credentials)"));
  }
  if (absl::Status s = MakePrivateDir(options.data_dir); !s.ok()) return s;
  if (absl::Status s = MakePrivateDir(dir); !s.ok()) return s;
  auto ca = MakeCa("taskq CA", kCaValidity);
  if (!ca.ok()) return ca.status();
  auto made = WriteServerCert(dir, *ca, options.hosts);
  if (!made.ok()) return made.status();
  if (absl::Status s = ReplacePrivateFile(hosts_file, options.hosts.empty()
                                                        ? std::string()
                                                        : absl::StrCat(absl::StrJoin(options.hosts, "\n"), "\n"));
      !s.ok()) {
    return s;
  }
  // The CA key before the certificate: a crash between them leaves a CA
  // that init refuses to overwrite, not a certificate without its key.
  if (absl::Status s = ReplacePrivateFile(ca_key, ca->key_pem); !s.ok()) return s;
  if (absl::Status s = ReplacePrivateFile(ca_cert, ca->cert_pem); !s.ok()) return s;
  auto admin = MakeAdminBundle(options, *ca);
  if (!admin.ok()) return admin.status();
  return absl::StrCat(
      "taskq-master init: made in ", dir, " (0700; files 0600):\n", "  ", kCaCertFile,
      "      the CA certificate: clients verify the master with it (--tls-ca)\n", "  ",
      kCaKeyFile,
      "      the CA's private key: signs server and client certificates; keep it here\n", *made,
      "  ", kHostsFile, "       the --host names (the addresses clients are given)\n",
      "and an admin credential and its join bundle:\n", *admin, NextSteps(options, dir));
}

int InitMain(int argc, char** argv) {
  InitOptions options;
  CLI::App app{
      "taskq-master init: make a data directory for a TLS deployment — a private CA, the "
      "master's certificate (for --host, the host's own names and addresses, localhost), "
      "all 0600 in a 0700 directory. A master started on the directory serves TLS on every "
      "address.",
      "taskq-master init"};
  app.add_option("--data-dir", options.data_dir,
                 "the master's data directory (the one given to taskq-master --data-dir)")
      ->required();
  app.add_option("--host", options.hosts,
                 "a name or IP address clients reach the master by (repeatable); the host's own "
                 "names and addresses and localhost are always included")
      ->type_name("NAME_OR_IP");
  app.add_option("--port", options.port, "the port the master will listen on (for the next "
                                         "commands and the admin's join bundle)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_flag("--rotate-server-cert", options.rotate_server_cert,
               "make a new server key and certificate from the existing CA (the first init's "
               "--host names unless given again); a running master serves it to new "
               "connections within seconds, without a restart");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto report = RunInit(options);
  if (!report.ok()) {
    std::fprintf(stderr, "taskq-master init: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::fputs(report->c_str(), stdout);
  return 0;
}

}  // namespace taskq
