// Secret scan: after a test, no token or private key it created may
// appear in any log line (the issue's "no secret in any log line of a full
// test run"). The harness (Cluster, NetnsCluster) runs it on its directory
// when it shuts down.
//
// Secrets are found, not declared: the token files (any file named
// *token*), every credential token (`tq1.<id>.<secret>`) anywhere in the
// directory (CLI output, join bundles), and every private key (PEM, also
// inside a join bundle). Logs are every process's stderr, the master's and
// workers' stdout, and any *.log file (audit logs). A CLI's stdout is not a
// log: `taskq credential create` prints the token there on purpose.
//
// Thread-safety: stateless; call after the processes writing the logs
// stopped.
#pragma once

#include <string>
#include <vector>

namespace taskq::testing {

// A secret found in a log: which secret (its first 6 characters only),
// where it came from, and the log file it appeared in.
struct LeakedSecret {
  std::string secret_prefix;
  std::string found_in;   // the file the secret was taken from
  std::string log_file;
};

// Scans `dir` (recursively) as described above.
std::vector<LeakedSecret> FindSecretsInLogs(const std::string& dir);

// Fails the current test (ADD_FAILURE) for each leaked secret.
void ExpectNoSecretsInLogs(const std::string& dir);

}  // namespace taskq::testing
