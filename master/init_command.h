// `taskq-master init`: makes a master's data directory ready for a secure
// deployment — a private CA, a server certificate signed by it, and (once
// credentials exist) an admin credential with its join bundle — so that the
// master started on that directory serves TLS on every address.
//
//   taskq-master init --data-dir D [--host NAME_OR_IP ...] [--port N]
//   taskq-master init --data-dir D --rotate-server-cert [--host ...]
//
// Files (master/tls_config.h): D is 0700, everything in D/tls is 0600 and
// written whole (temp file, fsync, rename), so the running master's file
// watcher never reads half a file. The server certificate names the --host
// entries, the host's own names and addresses (gethostname, getifaddrs),
// and localhost, 127.0.0.1 and ::1.
//
// init never replaces a CA: every client trusts it. --rotate-server-cert
// makes a new server key and certificate from the existing CA (the --host
// list of the first init unless new ones are given); a running master serves
// it to new connections within seconds, and clients need nothing new.
//
// Thread-safety: run from main, on one thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace taskq {

struct InitOptions {
  std::string data_dir;            // required
  std::vector<std::string> hosts;  // --host: DNS names or IP addresses
  int port = 5000;                 // the masters' port in the join bundle
  bool rotate_server_cert = false;
};

// Does the work; returns what it made and the commands to run next, for
// the terminal. FAILED_PRECONDITION if a CA exists and rotation was not
// asked for (or rotation was asked for and there is no CA);
// INVALID_ARGUMENT for a --host that is neither a name nor an address.
absl::StatusOr<std::string> RunInit(const InitOptions& options);

// `taskq-master init ...` (argv[0] is "init"): parses the flags, runs
// RunInit and prints. Returns the process exit code.
int InitMain(int argc, char** argv);

}  // namespace taskq
