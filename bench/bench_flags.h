// Flag parsing shared by the bench/ programs, on CLI11 (as the taskq CLI):
// the connection flags every taskq client bench takes, the workload flags
// of the square-shaped benches (tasks, batch, window, ...), and one Parse
// that turns CLI11's outcome into an exit status.
//
//   CLI::App app{"what this program measures", "taskq-foo-bench"};
//   bench::AddConnectFlags(app, &options.connect);
//   bench::AddBatchFlag(app, &options.batch);
//   bench::AddCount<uint64_t>(app, "--tasks", &options.tasks, "tasks measured", 1, 1 << 30);
//   if (std::optional<int> exit = bench::Parse(app, argc, argv)) return *exit;
//
// Thread-safety: call from main() before any thread starts; it only fills
// the variables it was given.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "common/channel.h"
#include "common/limits.h"

namespace taskq::bench {

// --master, --token-file, --tls, --tls-ca, --tls-server-name.
inline void AddConnectFlags(CLI::App& app, ConnectOptions* connect) {
  app.add_option("--master", connect->master, "the master, HOST:PORT");
  app.add_option("--token-file", connect->token_file, "file holding the bearer token");
  app.add_flag("--tls", connect->tls, "connect with TLS");
  app.add_option("--tls-ca", connect->tls_ca_file, "CA certificate (PEM) to verify the master");
  app.add_option("--tls-server-name", connect->tls_server_name,
                 "name to check the master's certificate against");
}

// An unsigned count flag with its default shown and a closed range.
template <typename T>
CLI::Option* AddCount(CLI::App& app, const std::string& name, T* value,
                      const std::string& description, T min, T max) {
  return app.add_option(name, *value, description)
      ->capture_default_str()
      ->check(CLI::Range(min, max));
}

// A string flag with its default shown.
inline CLI::Option* AddText(CLI::App& app, const std::string& name, std::string* value,
                            const std::string& description) {
  return app.add_option(name, *value, description)->capture_default_str();
}

// --queue: a queue name the master accepts (common/limits.h).
inline CLI::Option* AddQueueFlag(CLI::App& app, std::string* queue, const std::string& description) {
  return AddText(app, "--queue", queue, description)->check([](const std::string& name) {
    absl::Status s = ValidateName("queue", name);
    return s.ok() ? std::string() : std::string(s.message());
  });
}

// The flags of the square-shaped taskq benches (square, soak): how tasks
// are put and how long a run may wait. Each keeps the default it was given.
inline void AddBatchFlag(CLI::App& app, uint64_t* batch) {
  AddCount<uint64_t>(app, "--batch", batch, "tasks per Put", 1, kMaxTasksPerPut);
}
inline void AddWindowFlag(CLI::App& app, uint64_t* window) {
  AddCount<uint64_t>(app, "--window", window, "most tasks in flight (put, no result yet)", 1,
                     uint64_t{1} << 32);
}
inline void AddProducersFlag(CLI::App& app, uint64_t* producers) {
  AddCount<uint64_t>(app, "--producers", producers, "threads issuing Puts (Puts in flight)", 1,
                     64);
}
inline void AddMinWorkersFlag(CLI::App& app, uint64_t* min_workers) {
  AddCount<uint64_t>(app, "--min-workers", min_workers,
                     "first wait (up to the stall timeout) until this many Work streams serve "
                     "the queue (0: do not wait)",
                     0, 100000);
}
inline void AddStallTimeoutFlag(CLI::App& app, uint64_t* seconds) {
  AddCount<uint64_t>(app, "--stall-timeout", seconds,
                     "give up after this many seconds without a result", 1, 86400);
}

// Parses argv. Returns nothing when the program should go on, else the exit
// status: 0 after --help, 2 after a usage error (message on stderr).
inline std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int status = app.exit(e);
    return status == 0 ? 0 : 2;
  }
  return std::nullopt;
}

}  // namespace taskq::bench
