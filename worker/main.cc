// taskq-worker: pulls tasks from a taskq master and runs them (see
// docs/WORKER.md). A thin shell over worker/worker.h: flags, logging and
// signals. SIGTERM/SIGINT drain gracefully; a second one stops at once.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/join_bundle.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "common/log_flags.h"
#include "common/port_file.h"
#include "common/seconds_validator.h"
#include "worker/metrics_http.h"
#include "worker/worker.h"

namespace {

// exec children get fds 0-2 by dup2; if the worker itself started
// with one closed, a pipe could land there and be clobbered.
void EnsureStdFdsOpen() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      int null_fd = ::open("/dev/null", O_RDWR);
      if (null_fd >= 0 && null_fd != fd) ::close(null_fd);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  EnsureStdFdsOpen();
  // Block the stop signals before any thread starts, so every thread
  // inherits the mask and they are only read from the signalfd below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a child closing its stdin gives EPIPE, not death

  taskq::WorkerOptions options;
  taskq::LogFlags log_flags;
  double drain_seconds = 30;
  unsigned threads = 0;
  unsigned concurrency = 0;
  unsigned prefetch = 0;
  double exec_timeout_seconds = 0;

  CLI::App app{"taskq-worker: runs tasks from a taskq master's queues"};
  std::string join;
  app.add_option("--join", join,
                 "join bundle (from `taskq credential create --bundle`): the master's "
                 "addresses, its CA and this worker's credential, so nothing else is needed; "
                 "--master, --token-file, --tls-ca and --tls-server-name override its parts "
                 "(default: $TASKQ_JOIN)")
      ->envname("TASKQ_JOIN");
  app.add_option("--master", options.connect.master,
                 "master HOST:PORT (default: $TASKQ_MASTER, else 127.0.0.1:5000)");
  app.add_option("--token-file", options.connect.token_file,
                 "file holding the master's token (default: $TASKQ_TOKEN_FILE, else "
                 "~/.config/taskq/token)");
  app.add_flag("--tls", options.connect.tls, "connect with TLS");
  app.add_option("--tls-ca", options.connect.tls_ca_file,
                 "PEM file of the CA that signed the master's certificate (implies --tls)");
  app.add_option("--tls-server-name", options.connect.tls_server_name,
                 "name to check in the master's certificate");
  const double min_keepalive = absl::ToDoubleSeconds(taskq::kMinKeepalive);
  const double max_keepalive = absl::ToDoubleSeconds(taskq::kMaxKeepalive);
  double keepalive_seconds = absl::ToDoubleSeconds(taskq::kDefaultWorkerKeepalive);
  app.add_option("--keepalive", keepalive_seconds,
                 "seconds: ping the master after this long without one, and give the connection "
                 "up when a ping stays unanswered as long. A dead link is noticed within 2 x "
                 "this, and the running tasks stop; keep it below half the master's "
                 "--keepalive, and above the round trip plus the time to send a large result "
                 "on a slow link (default 2)")
      ->check(taskq::SecondsIn(min_keepalive, max_keepalive));
  double connect_timeout_seconds = absl::ToDoubleSeconds(taskq::kDefaultConnectTimeout);
  app.add_option("--connect-timeout", connect_timeout_seconds,
                 "seconds one attempt to connect (TCP, TLS handshake, HTTP/2) may take before "
                 "it is retried; raise it over long or lossy links (default 20)")
      ->check(taskq::SecondsIn(absl::ToDoubleSeconds(taskq::kMinConnectTimeout),
                         absl::ToDoubleSeconds(taskq::kMaxConnectTimeout)));
  app.add_option("--queue", options.queues, "queue to take tasks from (repeatable; default: tasks)")
      ->take_all()
      ->allow_extra_args(false);
  app.add_option("--threads", threads,
                 "threads running CPU-bound (synchronous) handlers such as square "
                 "(default: number of cores)")
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--concurrency", concurrency,
                 "tasks run at once, CPU-bound or not; sleep and exec tasks hold no thread "
                 "while they wait (default: --threads)")
      ->check(CLI::Range(1u, 100000u));
  app.add_option("--prefetch", prefetch, "tasks taken beyond --concurrency, waiting to run")
      ->check(CLI::Range(0u, 100000u));
  app.add_option("--allow-exec", options.exec.allow,
                 "a command the exec handler may run: 'NAME=PROGRAM ARG...' (one value: the "
                 "whole command line; tasks name it in args[0] and send only stdin). The old "
                 "form PROGRAM is NAME=PROGRAM. Repeatable")
      ->allow_extra_args(false);
  app.add_option("--allow-exec-file", options.exec.allow_file,
                 "file of --allow-exec values, one a line (# comments); it must not be "
                 "writable by group or others");
  app.add_option("--allow-exec-args", options.exec.allow_args,
                 "let tasks append arguments to the --allow-exec command NAME (the program must "
                 "treat them as hostile; see docs/WORKER.md). Repeatable")
      ->allow_extra_args(false);
  app.add_option("--exec-env", options.exec.env,
                 "NAME: pass the worker's NAME to exec children; NAME=VALUE: set it. They get "
                 "only PATH, LANG, LC_ALL, TZ and these. Repeatable")
      ->allow_extra_args(false);
  app.add_option("--exec-timeout", exec_timeout_seconds,
                 "seconds an exec task may run before it and everything it started are killed "
                 "(a retryable failure; default 0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--exec-rlimit-as", options.exec.rlimits.address_space_mb,
                 "address space limit of exec children, in MiB (RLIMIT_AS)");
  app.add_option("--exec-rlimit-cpu", options.exec.rlimits.cpu_seconds,
                 "CPU seconds limit of exec children (RLIMIT_CPU)");
  app.add_option("--exec-rlimit-nofile", options.exec.rlimits.open_files,
                 "open files limit of exec children (RLIMIT_NOFILE)");
  app.add_option("--exec-rlimit-fsize", options.exec.rlimits.file_size_mb,
                 "largest file exec children may write, in MiB (RLIMIT_FSIZE)");
  app.add_option("--exec-cgroup", options.exec.cgroup,
                 "auto: a cgroup v2 per exec task when the worker can create one, else process "
                 "sessions; off: sessions; DIR: create task cgroups under this cgroup v2 directory "
                 "(default auto)");
  app.add_option("--id", options.id, "worker name shown by the master (default: hostname:pid)");
  app.add_option("--drain-timeout", drain_seconds,
                 "on SIGTERM/SIGINT, seconds running tasks may take to finish before they are "
                 "released back to the master")
      ->check(CLI::NonNegativeNumber);
  taskq::AddLogFlags(app, &log_flags);
  taskq::WorkerHttpOptions http;
  std::string http_port_file;
  app.add_option("--http-listen", http.listen,
                 "HOST:PORT to serve Prometheus metrics on (GET /metrics; off by default). "
                 "Loopback: plain HTTP. Elsewhere: needs --http-token-file, and HTTPS with "
                 "--http-tls-cert/--http-tls-key or plain HTTP with --http-insecure "
                 "(docs/METRICS.md)");
  app.add_option("--http-port-file", http_port_file,
                 "write the bound --http-listen HOST:PORT to this file");
  app.add_option("--http-token-file", http.token_file,
                 "file (0600) holding the bearer token /metrics requests must carry; required "
                 "off loopback, optional on it");
  app.add_option("--http-tls-cert", http.tls_cert, "PEM certificate chain: serve /metrics over HTTPS");
  app.add_option("--http-tls-key", http.tls_key, "PEM private key for --http-tls-cert");
  app.add_flag("--http-insecure", http.insecure,
               "allow plain HTTP for --http-listen off loopback (the token crosses in the clear)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  taskq::InitLoggingFromFlags("taskq-worker", log_flags);
  taskq::RouteGrpcLogs();
  options.threads = static_cast<int>(threads);
  options.concurrency = static_cast<int>(concurrency);
  options.prefetch = static_cast<int>(prefetch);
  options.drain_timeout = absl::Seconds(drain_seconds);
  options.connect.keepalive = absl::Seconds(keepalive_seconds);
  options.connect.connect_timeout = absl::Seconds(connect_timeout_seconds);
  options.exec.timeout = absl::Seconds(exec_timeout_seconds);
  if (absl::Status s = taskq::ApplyJoinBundleFile(join, &options.connect); !s.ok()) {
    taskq::LogError("%s", s.message());
    return 1;
  }

  // The stop signals are read through a signalfd that the worker watches
  // as a coroutine (no thread waits for them): the first drains, a second
  // one stops at once.
  int signal_fd = ::signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    taskq::LogError("signalfd: %s", std::strerror(errno));
    return 1;
  }
  options.stop_signal_fd = signal_fd;

  taskq::Worker worker(options);
  std::unique_ptr<taskq::WorkerHttpServer> http_server;
  if (!http.listen.empty()) {
    auto started = taskq::WorkerHttpServer::Start(
        http, [&worker] { return worker.metrics().Render(); });
    if (!started.ok()) {
      taskq::LogError("%s", started.status().message());
      return 1;
    }
    http_server = *std::move(started);
    taskq::LogEvent(taskq::LogLevel::kInfo, "serving /metrics",
                    {{"address", http_server->address()},
                     {"scheme", http_server->https() ? "https" : "http"}});
    if (!http_port_file.empty() && !taskq::WritePortFile(http_port_file, http_server->address())) {
      taskq::LogError("cannot write port file %s", http_port_file);
      return 1;
    }
  }
  absl::Status status = worker.Run();
  if (http_server) http_server->Stop();
  if (!status.ok()) {
    taskq::LogError("%s", status.message());
    return 1;
  }
  ::close(signal_fd);
  if (worker.has_stuck_handlers()) {
    // The destructor would wait for them forever; the drain is over.
    std::fflush(nullptr);
    ::_exit(0);
  }
  return 0;
}
