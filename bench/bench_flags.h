// Flag parsing shared by the bench/ programs, on CLI11 (as the taskq CLI):
// the connection flags every taskq client bench takes, the workload flags
// of the square-shaped benches (tasks, batch, window, ...), and one Parse
// that turns CLI11's outcome into an exit status.
//
//   CLI::App app{"what this program measures", "taskq-foo-bench"};
//   bench::AddConnectFlags(app, &options.connect);
//   bench::AddCount(app, "--tasks", &options.tasks, "tasks measured", 1, 1 << 30);
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
