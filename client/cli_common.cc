#include "client/cli_common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <cstdlib>

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cluster_redirect.h"
#include "client/task_format.h"
#include "common/call_retry.h"
#include "common/channel.h"
#include "common/join_bundle.h"
#include "common/seconds_validator.h"
#include "common/sync.h"

namespace taskq::cli {

const char kVerbFooter[] =
    "\nGlobal options (before or after the verb): --join FILE ($TASKQ_JOIN),\n"
    "--master HOST:PORT ($TASKQ_MASTER), --token-file PATH ($TASKQ_TOKEN_FILE),\n"
    "--tls, --tls-ca FILE ($TASKQ_TLS_CA),\n"
    "--tls-server-name NAME, --connect-timeout SECONDS, --keepalive SECONDS, --retry-for SECONDS.\n"
    "Exit codes: 0 ok, 1 error, 2 usage, 3 queue empty, 4 queue full, 5 refused by\n"
    "the master, 6 master unreachable, 7 a task failed or was cancelled, 8 timed out,\n"
    "9 queue shut down, 130 Ctrl-C.";

CLI::App* AddVerb(CLI::App* parent, const std::string& name, const std::string& description) {
  CLI::App* app = parent->add_subcommand(name, description);
  app->footer(kVerbFooter);
  return app;
}

void AddGlobalOptions(CLI::App& app, GlobalOptions* options) {
  app.option_defaults()->group("Global options");
  app.add_option("--join", options->join,
                 "Join bundle (from `taskq credential create --bundle`): the master's "
                 "addresses, its CA and a credential, so nothing else is needed; the flags "
                 "below override its parts. Must be mode 0600")
      ->envname("TASKQ_JOIN")
      ->type_name("FILE");
  // $TASKQ_MASTER, $TASKQ_TOKEN_FILE and $TASKQ_TLS_CA are read in
  // ResolveConnectOptions, after the join bundle: a bundle beats them.
  app.add_option("--master", options->master,
                 "Address of the master, HOST:PORT (default $TASKQ_MASTER, else "
                 "127.0.0.1:5000)")
      ->type_name("HOST:PORT");
  app.add_option("--token-file", options->token_file,
                 "File holding the master's token (default $TASKQ_TOKEN_FILE, else "
                 "~/.config/taskq/token, the master's default too); must be mode 0600")
      ->type_name("PATH");
  app.add_flag("--tls", options->tls, "Connect with TLS (system root certificates)");
  app.add_option("--tls-ca", options->tls_ca,
                 "PEM file of the CA that signed the master's certificate (implies --tls; "
                 "default $TASKQ_TLS_CA)")
      ->type_name("FILE");
  app.add_option("--tls-server-name", options->tls_server_name,
                 "Name to check against the master's certificate instead of HOST")
      ->type_name("NAME");
  app.add_option("--connect-timeout", options->connect_timeout,
                 "Seconds one attempt to connect (TCP, TLS handshake) may take; raise it for "
                 "long or lossy links (default 20)")
      ->check(SecondsIn(absl::ToDoubleSeconds(kMinConnectTimeout), absl::ToDoubleSeconds(kMaxConnectTimeout)))
      ->type_name("SECONDS");
  app.add_option("--keepalive", options->keepalive,
                 "Seconds between keepalive pings; a dead link is noticed within twice this "
                 "(default 5)")
      ->check(SecondsIn(absl::ToDoubleSeconds(kMinKeepalive), absl::ToDoubleSeconds(kMaxKeepalive)))
      ->type_name("SECONDS");
  app.add_option("--retry-for", options->retry_for,
                 "Seconds a call that does not wait keeps retrying a master it cannot reach "
                 "before giving up with exit 6 (default 30; 0 = do not retry). Waiting calls "
                 "(submit --wait, get, join, put on a full queue) retry until their own timeout")
      ->check(SecondsIn(0, 86400))
      ->type_name("SECONDS");
  AddLogFlags(app, &options->log);
  app.option_defaults()->group("Options");
}

namespace {

ConnectOptions ToConnectOptions(const GlobalOptions& options) {
  ConnectOptions c;
  c.master = options.master;
  c.token_file = options.token_file;
  c.tls = options.tls;
  c.tls_ca_file = options.tls_ca;
  c.tls_server_name = options.tls_server_name;
  c.connect_timeout = absl::Seconds(options.connect_timeout);
  c.keepalive = absl::Seconds(options.keepalive);
  return c;
}

}  // namespace

absl::StatusOr<ConnectOptions> ResolvedConnectOptions(const GlobalOptions& options) {
  ConnectOptions c = ToConnectOptions(options);
  if (absl::Status s = ApplyJoinBundleFile(options.join, &c); !s.ok()) return s;
  return ResolveConnectOptions(std::move(c));
}

std::string MasterAddress(const GlobalOptions& options) {
  auto c = ResolvedConnectOptions(options);
  if (!c.ok()) return ResolveConnectOptions(ToConnectOptions(options)).master;
  return c->master.empty() ? absl::StrJoin(c->masters, ",") : c->master;
}

std::unique_ptr<Client> ConnectOrReport(const GlobalOptions& options) {
  ClientOptions client_options;
  client_options.retry = options.retry_for > 0;
  if (client_options.retry) client_options.call_timeout = absl::Seconds(options.retry_for);
  const std::string master = MasterAddress(options);
  client_options.on_unreachable = [master](const absl::Status& status) {
    PrintError(absl::StrCat("cannot reach the master at ", master, " (", status.message(),
                            "); retrying"));
  };
  client_options.on_reachable = [master] {
    PrintError(absl::StrCat("reached the master at ", master, " again"));
  };
  auto connect = ResolvedConnectOptions(options);
  if (!connect.ok()) {
    PrintError(connect.status().message());
    return nullptr;
  }
  auto client = Client::Connect(*connect, client_options);
  if (!client.ok()) {
    PrintError(client.status().message());
    return nullptr;
  }
  return *std::move(client);
}

namespace {

// What to do about a refused TLS connection (common/call_retry.h); empty
// if the failure is not one.
std::string TlsRefusalHint(TlsRefusal refusal, absl::string_view master) {
  switch (refusal) {
    case TlsRefusal::kNone: return "";
    case TlsRefusal::kUntrustedCertificate:
      return "the master's TLS certificate is not signed by the CA this client trusts: give "
             "the master's CA with --tls-ca FILE (its <data-dir>/tls/ca.pem) or a join bundle "
             "with --join FILE";
    case TlsRefusal::kWrongName:
      return absl::StrCat(
          "the master's TLS certificate is not made for the name in ", master,
          ": connect by a name or address it names (`taskq-master init --rotate-server-cert "
          "--host NAME` on the master adds one), or check another with --tls-server-name NAME");
    case TlsRefusal::kHandshakeRefused:
      return "the TLS handshake with the master failed: if the master serves plaintext, "
             "connect without --tls/--tls-ca (or run `taskq-master init` on it); if this client "
             "sends a certificate, the master did not accept it";
    case TlsRefusal::kMasterWantsTls:
      return "the master serves TLS and closed the connection: without TLS, give --tls-ca "
             "FILE (the master's <data-dir>/tls/ca.pem) or --join FILE; with a client "
             "certificate, the master did not accept it";
  }
  return "";
}

}  // namespace

std::string ErrorMessage(const absl::Status& status, CallKind kind, absl::string_view master) {
  std::string message(status.message());
  // Not retried (common/call_retry.h); gRPC's text alone does not say what to do.
  if (std::string hint = TlsRefusalHint(ClassifyTlsRefusal(status), master); !hint.empty()) {
    return absl::StrCat("cannot connect to the master at ", master, ": ", hint, " (", message, ")");
  }
  if (absl::IsUnavailable(status)) {
    // The master's own UNAVAILABLE says everything: "outcome unknown" (a
    // commit failed, the change is kept and retried), or a refusal that
    // changed nothing. Otherwise the call was cut off.
    const bool master_said = absl::StrContains(message, "outcome unknown") ||
                             absl::StrContains(message, "store I/O error") ||
                             absl::StrContains(message, "master is shutting down") ||
                             // cluster: "owner NAME is down" (nothing was done)
                             QueueOwnerOf(status).has_value();
    if (!master_said) {
      message = absl::StrCat("cannot reach the master at ", master, ": ", message);
    }
    // A put is not retried here: one that may have reached the master may
    // be stored, and a blind retry would store it twice.
    const bool is_put =
        kind == CallKind::kPut || (kind == CallKind::kSubmit && absl::StrContains(message, "putting"));
    const bool never_sent = absl::StrContains(message, "failed to connect") ||
                            absl::StrContains(message, "DNS resolution failed");
    if (is_put && !master_said && !never_sent) {
      absl::StrAppend(&message, " (outcome unknown: the tasks may or may not have been stored; "
                                "retry with --dedup-key so that they are stored once)");
    }
  } else if (absl::IsUnauthenticated(status)) {
    message = absl::StrCat("authentication failed: ", message);
    if (!absl::StrContains(message, "token")) {
      absl::StrAppend(&message, " (is --token-file / $TASKQ_TOKEN_FILE the master's token file?)");
    }
  }
  if (message.empty()) message = status.ToString();
  return message;
}

int ReportError(const absl::Status& status, CallKind kind, const GlobalOptions& options) {
  PrintError(ErrorMessage(status, kind, MasterAddress(options)));
  return ExitCodeFor(status, kind);
}

int UsageError(absl::string_view message) {
  PrintError(message);
  return kExitUsage;
}

absl::Duration SecondsToDuration(double seconds) {
  // Beyond ~31 years nobody is waiting; also keeps absl::Seconds in range.
  if (!(seconds < 1e9)) return absl::InfiniteDuration();
  return absl::Seconds(seconds);
}

absl::StatusOr<uint32_t> SecondsToMs(double seconds, absl::string_view flag) {
  const double ms = std::ceil(seconds * 1000);
  if (!(ms >= 0) || ms > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", seconds, " is out of range (0 to ",
                     std::numeric_limits<uint32_t>::max() / 1000, " seconds)"));
  }
  return static_cast<uint32_t>(ms);
}

void AddWaitFlags(CLI::App* app, WaitFlags* flags, absl::string_view what_waits) {
  auto* timeout =
      app->add_option("--timeout", flags->timeout_seconds,
                      absl::StrCat("Seconds to wait ", what_waits,
                                   " (fractions allowed; 0 = do not wait). Default: forever"))
          ->check(CLI::NonNegativeNumber)
          ->type_name("SECONDS");
  auto* nowait = app->add_flag("--nowait", flags->nowait,
                               absl::StrCat("Do not wait ", what_waits, "; same as --timeout 0"));
  timeout->excludes(nowait);
}

absl::StatusOr<std::map<std::string, std::string>> ParseHeaders(
    const std::vector<std::string>& headers) {
  std::map<std::string, std::string> out;
  for (const std::string& h : headers) {
    auto eq = h.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--header wants KEY=VALUE with a non-empty KEY, got \"", h, "\""));
    }
    out[h.substr(0, eq)] = h.substr(eq + 1);
  }
  return out;
}

absl::StatusOr<std::vector<v1::TaskSpec>> BuildTasks(const std::vector<std::string>& payload_args,
                                                     const std::vector<std::string>& header_flags,
                                                     v1::TaskSpec shared) {
  auto headers = ParseHeaders(header_flags);
  if (!headers.ok()) return headers.status();
  shared.mutable_headers()->insert(headers->begin(), headers->end());
  std::vector<std::string> payloads = ExpandStdin(payload_args);
  std::vector<v1::TaskSpec> tasks(payloads.size(), shared);
  for (size_t i = 0; i < payloads.size(); ++i) tasks[i].set_payload(std::move(payloads[i]));
  return tasks;
}

std::vector<std::string> ExpandStdin(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  out.reserve(args.size());
  for (const std::string& arg : args) {
    if (arg != "-") {
      out.push_back(arg);
      continue;
    }
    // POSIX getline: fast on millions of lines, and keeps NUL bytes.
    char* buf = nullptr;
    size_t cap = 0;
    for (ssize_t n; (n = ::getline(&buf, &cap, stdin)) >= 0;) {
      std::string line(buf, static_cast<size_t>(n));
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) out.push_back(std::move(line));
    }
    std::free(buf);
  }
  return out;
}

std::string KindName(v1::QueueKind kind) {
  switch (kind) {
    case v1::QUEUE_KIND_LIFO:
      return "lifo";
    case v1::QUEUE_KIND_PRIORITY:
      return "priority";
    default:
      return "fifo";
  }
}

void WriteText(std::FILE* stream, absl::string_view text) {
  // Checked once per stream: it does not change while the CLI runs.
  static const bool stdout_tty = ::isatty(STDOUT_FILENO) == 1;
  static const bool stderr_tty = ::isatty(STDERR_FILENO) == 1;
  const bool tty = stream == stdout ? stdout_tty : stream == stderr ? stderr_tty : false;
  if (tty) {
    const std::string shown = EscapeForTerminal(text);
    std::fwrite(shown.data(), 1, shown.size(), stream);
  } else {
    std::fwrite(text.data(), 1, text.size(), stream);
  }
  std::fflush(stream);
}

namespace {

Mutex stderr_guard_mu;
std::function<void(const std::function<void()>&)> stderr_guard ABSL_GUARDED_BY(stderr_guard_mu);

}  // namespace

void SetStderrGuard(std::function<void(const std::function<void()>&)> guard) {
  MutexLock lock(&stderr_guard_mu);
  stderr_guard = std::move(guard);
}

void PrintError(absl::string_view message) {
  if (GetLogFormat() == LogFormat::kJson) {
    // A log collector reading stderr gets JSON lines only.
    MutexLock lock(&stderr_guard_mu);
    if (stderr_guard) {
      stderr_guard([&] { LogEvent(LogLevel::kError, message); });
    } else {
      LogEvent(LogLevel::kError, message);
    }
    return;
  }
  const std::string line = absl::StrCat("taskq: ", message, "\n");
  // Held while writing: SetStderrGuard(nullptr) returns only once no write
  // goes through the old guard any more.
  MutexLock lock(&stderr_guard_mu);
  if (stderr_guard) {
    stderr_guard([&] { WriteText(stderr, line); });
  } else {
    WriteText(stderr, line);
  }
}

void PrintLine(absl::string_view prefix, absl::string_view payload) {
  WriteText(stdout, absl::StrCat(prefix, payload, "\n"));
}

void PrintIds(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return;
  std::string out;
  for (uint64_t id : ids) absl::StrAppend(&out, id, "\n");
  out.pop_back();
  PrintLine("", out);
}

void PrintPayload(absl::string_view prefix, absl::string_view payload) {
  if (!payload.empty() && payload.back() == '\n') payload.remove_suffix(1);
  PrintLine(prefix, payload);
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    PrintLine("", line);
  }
}

}  // namespace taskq::cli
