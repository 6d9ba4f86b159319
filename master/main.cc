// taskq-master: serves named task and result queues over authenticated gRPC.
// Usage: taskq-master [--listen HOST:PORT] [--token-file PATH] ... (--help)
//        taskq-master init --data-dir DIR [--host NAME_OR_IP ...] (init --help)
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/channel.h"
#include "common/seconds_validator.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "common/log_flags.h"
#include "common/port_file.h"
#include "master/init_command.h"
#include "master/refusals.h"
#include "master/server.h"

int main(int argc, char** argv) {
  // `taskq-master init ...` has flags of its own (master/init_command.h).
  if (argc >= 2 && std::string(argv[1]) == "init") return taskq::InitMain(argc - 1, argv + 1);
  taskq::MasterOptions options;
  std::string port_file;
  taskq::LogFlags log_flags;
  double default_lease_s = 30;
  double default_backoff_s = 1;
  double default_backoff_max_s = 60;
  bool no_auto_create = false;

  CLI::App app{"taskq-master: serves named task queues to workers and clients over gRPC"};
  app.footer("Setup: `taskq-master init --data-dir DIR [--host NAME_OR_IP ...]` makes a CA and "
             "a server certificate in DIR/tls; a master on that --data-dir then serves TLS on "
             "every address (taskq-master init --help)");
  app.add_option("--listen", options.listen,
                 "HOST:PORT to serve on; port 0 picks a free port")
      ->capture_default_str();
  app.add_option("--port-file", port_file, "write the bound HOST:PORT to this file");
  std::string http_port_file;
  app.add_option("--http-listen", options.http_listen,
                 "HOST:PORT to serve Prometheus metrics on (GET /metrics; off by default). "
                 "Loopback: plain HTTP, no token. Elsewhere: HTTPS with the master's TLS "
                 "certificate (or plain HTTP with --insecure) and a bearer token of any "
                 "credential (docs/METRICS.md)");
  app.add_option("--http-port-file", http_port_file,
                 "write the bound --http-listen HOST:PORT to this file");
  std::string keda_port_file;
  app.add_option("--keda-listen", options.keda_listen,
                 "HOST:PORT to serve KEDA's external scaler on (queue depth for autoscaling; "
                 "off by default). Loopback: plaintext. Elsewhere: TLS requiring a client "
                 "certificate of a credential (or plaintext with --insecure) "
                 "(docs/KUBERNETES.md)");
  app.add_option("--keda-port-file", keda_port_file,
                 "write the bound --keda-listen HOST:PORT to this file");
  app.add_option("--token-file", options.token_file,
                 "shared-secret token file (created 0600 with a random token if absent); "
                 "default $TASKQ_TOKEN_FILE or ~/.config/taskq/token");
  app.add_option("--tls-cert", options.tls_cert_file, "PEM certificate chain: serve TLS (default: DIR/tls/server.pem of --data-dir, made by init)");
  app.add_option("--tls-key", options.tls_key_file, "PEM private key for --tls-cert");
  app.add_flag("--insecure", options.insecure,
               "allow plaintext on a non-loopback address (trusted networks only)");
  app.add_option("--default-lease", default_lease_s,
                 "lease time in seconds for queues that do not set one")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--default-backoff", default_backoff_s,
                 "first retry delay in seconds (doubling per attempt, jittered) for queues "
                 "that do not set one")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--default-backoff-max", default_backoff_max_s,
                 "longest retry delay in seconds for queues that do not set one")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--max-attempts", options.engine.default_max_attempts,
                 "deliveries before a task is given up, for queues that do not set it")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_flag("--no-auto-create", no_auto_create,
               "refuse unknown queues instead of creating them on first use");
  app.add_option("--max-queues", options.engine.max_queues,
                 "most queues the master holds; creating one more (explicitly or on first use) "
                 "is refused with RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{100'000'000}));
  double results_ttl_s = 86400;
  app.add_option("--results-ttl", results_ttl_s,
                 "seconds a private result queue (_results.*, e.g. of `submit --wait`) that "
                 "sets no idle TTL may sit unread, with no result still owed to it, before the "
                 "master deletes it; 0 = never")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 365 * 86400.0));
  app.add_option("--max-payload-bytes", options.engine.max_payload_bytes,
                 "largest task payload or result accepted")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{32} << 20));
  app.add_option("--threads", options.threads,
                 "threads of the coroutine scheduler (waiting calls, timers); 0 = one per core")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--data-dir", options.data_dir,
                 "directory of the durable store (created if missing; one master per directory). "
                 "Default: $STATE_DIRECTORY/data under systemd, else $XDG_DATA_HOME/taskq or "
                 "~/.local/share/taskq");
  app.add_option("--audit-log", options.audit_log,
                 "append a line per admin action and per refused credential use here (0600; "
                 "rate-limited); '-' = stderr. Default: <data-dir>/audit.log");
  app.add_option("--store", options.store,
                 "sqlite (durable, in --data-dir) or memory (everything lost on exit)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sqlite", "memory"}));
  std::string fsync = "always";
  app.add_option("--fsync", fsync,
                 "always: acknowledge after the change is on disk (group commit); interval: "
                 "sync every --fsync-interval-ms, acknowledge at once; never: leave it to the OS")
      ->capture_default_str()
      ->check(CLI::IsMember({"always", "interval", "never"}));
  int fsync_interval_ms = 10;
  app.add_option("--fsync-interval-ms", fsync_interval_ms,
                 "with --fsync interval: the most a power cut can lose")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  size_t memory_budget_mb = 256;
  app.add_option("--memory-budget-mb", memory_budget_mb,
                 "memory for task records and payloads; beyond it queued tasks keep only their "
                 "place in their queue (~30 bytes) and are read back from the store when handed "
                 "out, and puts of delayed tasks are refused (RESOURCE_EXHAUSTED); with --store "
                 "memory every put beyond it is refused")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{1} << 30));
  uint64_t min_free_disk_mb = 128;
  app.add_option("--min-free-disk-mb", min_free_disk_mb,
                 "refuse writes (RESOURCE_EXHAUSTED) while the --data-dir file system has less "
                 "free space than this; reads go on, writes resume once space is freed. A "
                 "master that starts below it (or cannot write at all) starts read-only")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 30));
  app.add_option("--max-connections", options.max_connections,
                 "connections open at once; 0 = as many as the open-file limit allows (the "
                 "master raises its soft limit to the hard one at start)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, size_t{10'000'000}));
  app.add_option("--max-unauthenticated", options.max_unauthenticated,
                 "connections open at once that have not yet made a call with a valid token")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{10'000'000}));
  app.add_option("--max-unauthenticated-per-ip", options.max_unauthenticated_per_ip,
                 "the same, from one address")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{10'000'000}));
  double unauthenticated_timeout_s = 10;
  app.add_option("--unauthenticated-timeout", unauthenticated_timeout_s,
                 "seconds a connection may stay open without a call with a valid token")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  size_t grpc_memory_mb = 1024;
  app.add_option("--grpc-memory-mb", grpc_memory_mb,
                 "memory gRPC may use for connections and messages in flight; under pressure "
                 "it cancels streams instead of growing")
      ->capture_default_str()
      ->check(CLI::Range(size_t{16}, size_t{1} << 20));
  app.add_option("--max-streams-per-connection", options.max_concurrent_streams,
                 "calls one connection may have open at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  double keepalive_s = absl::ToDoubleSeconds(taskq::kDefaultMasterKeepalive);
  app.add_option("--keepalive", keepalive_s,
                 "seconds: ping every connection after this long, and close it if the answer "
                 "takes as long again. A worker that vanished (power off, a cut link) is "
                 "noticed within 2 x this and its leases return to ready; keep it above the "
                 "round trip to the farthest worker")
      ->capture_default_str()
      ->check(taskq::SecondsIn(absl::ToDoubleSeconds(taskq::kMinKeepalive),
                         absl::ToDoubleSeconds(taskq::kMaxKeepalive)));
  app.add_flag("--recover-truncate", options.recover_truncate,
               "start even if the store's write-ahead log is damaged before its end (not just "
               "torn by a crash), dropping the committed changes after the damage; the damaged "
               "log is copied aside first. Without it the master refuses to start on one");
  app.add_option("--cluster", options.cluster.etcd,
                 "etcd://HOST:PORT[,HOST:PORT...]: join the cluster of masters coordinated by "
                 "this etcd; queues are spread over the masters and every master answers for "
                 "every queue, redirecting callers to its owner (docs/CLUSTER.md)");
  app.add_option("--advertise", options.cluster.advertise,
                 "with --cluster: HOST:PORT clients and workers reach this master at (required; "
                 "port 0 = the port --listen bound)");
  app.add_option("--name", options.cluster.name,
                 "with --cluster: this master's name, unique in the cluster (default: the "
                 "hostname); keep it across restarts")
      ->default_str("the hostname");
  app.add_option("--cluster-prefix", options.cluster.prefix,
                 "with --cluster: the etcd key prefix of this cluster")
      ->capture_default_str();
  app.add_option("--cluster-ca", options.cluster.peer_ca_file,
                 "with --cluster: PEM CA that the other masters' TLS certificates are verified "
                 "against when this master calls them (moving a queue); default: "
                 "<data-dir>/tls/ca.pem if it exists, else the system's roots")
      ->type_name("FILE");
  std::string cluster_ttl = "10s";
  app.add_option("--cluster-ttl", cluster_ttl,
                 "with --cluster: how long after this master dies the others call it down "
                 "(its etcd lease; e.g. 10s)")
      ->capture_default_str();
  taskq::AddLogFlags(app, &log_flags);
  CLI11_PARSE(app, argc, argv);

  if (!taskq::ParseClusterTtl(cluster_ttl, &options.cluster.ttl)) {
    std::fprintf(stderr, "taskq-master: --cluster-ttl \"%s\" is not a duration (e.g. 10s)\n",
                 cluster_ttl.c_str());
    return 2;
  }
  bool cluster_flags = !options.cluster.advertise.empty() || !options.cluster.name.empty() ||
                       app.count("--cluster-prefix") > 0 || app.count("--cluster-ttl") > 0 ||
                       app.count("--cluster-ca") > 0;
  if (options.cluster.etcd.empty() && cluster_flags) {
    std::fprintf(stderr, "taskq-master: --advertise, --name, --cluster-prefix, --cluster-ttl and "
                         "--cluster-ca need --cluster etcd://HOST:PORT\n");
    return 2;
  }
  if (absl::Status s = taskq::ValidateClusterOptions(options.cluster); !s.ok()) {
    std::fprintf(stderr, "taskq-master: %s\n", std::string(s.message()).c_str());
    return 2;
  }

  options.engine.default_lease = absl::Milliseconds(static_cast<int64_t>(default_lease_s * 1000));
  if (default_backoff_max_s < default_backoff_s) {
    std::fprintf(stderr, "taskq-master: --default-backoff-max (%g s) is below --default-backoff (%g s)\n",
                 default_backoff_max_s, default_backoff_s);
    return 2;
  }
  options.engine.default_backoff =
      absl::Milliseconds(static_cast<int64_t>(default_backoff_s * 1000));
  options.engine.default_backoff_max =
      absl::Milliseconds(static_cast<int64_t>(default_backoff_max_s * 1000));
  options.engine.auto_create_queues = !no_auto_create;
  options.engine.results_ttl = absl::Milliseconds(static_cast<int64_t>(results_ttl_s * 1000));
  options.fsync = *taskq::ParseFsyncPolicy(fsync);
  options.fsync_interval = absl::Milliseconds(fsync_interval_ms);
  options.min_free_disk_bytes = min_free_disk_mb << 20;
  options.engine.memory_budget_bytes = memory_budget_mb << 20;
  options.unauthenticated_timeout =
      absl::Milliseconds(static_cast<int64_t>(unauthenticated_timeout_s * 1000));
  options.grpc_memory_bytes = grpc_memory_mb << 20;
  options.keepalive = absl::Milliseconds(static_cast<int64_t>(keepalive_s * 1000));
  if (options.store == "memory" && memory_budget_mb == 0) {
    std::fprintf(stderr, "taskq-master: --memory-budget-mb 0 with --store memory would refuse "
                         "every put: give the memory the master may use for tasks\n");
    return 2;
  }
  taskq::InitLoggingFromFlags("taskq-master", log_flags);
  taskq::RouteProtobufLogs();
  taskq::RouteGrpcLogs();

  // Signals are taken by one watcher thread (sigwait), not async handlers.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  taskq::MasterServer server(options);
  // If accepting connections fails for good, stop (through the signal
  // watcher) and exit non-zero, so a supervisor restarts the master.
  server.set_on_fatal([] { ::kill(::getpid(), SIGTERM); });
  auto bound = server.Start();
  if (!bound.ok()) {
    taskq::LogError("%s", bound.status().message());
    return 1;
  }
  std::printf("taskq-master listening on %s\n", bound->c_str());
  std::fflush(stdout);
  if (!port_file.empty() && !taskq::WritePortFile(port_file, *bound)) {
    taskq::LogError("cannot write port file %s", port_file);
    server.Shutdown();
    return 1;
  }

  if (!http_port_file.empty() && !taskq::WritePortFile(http_port_file, server.http_address())) {
    taskq::LogError("cannot write port file %s", http_port_file);
    server.Shutdown();
    return 1;
  }

  if (!keda_port_file.empty() && !taskq::WritePortFile(keda_port_file, server.keda_address())) {
    std::fprintf(stderr, "taskq-master: cannot write port file %s\n", keda_port_file.c_str());
    server.Shutdown();
    return 1;
  }

  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    taskq::LogInfo("received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.Shutdown();
  });
  server.Wait();
  watcher.join();
  if (server.failed()) {
    taskq::LogError("stopped: could not accept connections any more");
    return 1;
  }
  taskq::LogInfo("stopped");
  return 0;
}
