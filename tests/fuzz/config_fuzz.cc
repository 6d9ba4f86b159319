// Fuzz target: the small parsers of outside input that are not requests:
// token files (read, trimmed, judged for strength), the authorization header, gRPC
// peer strings (the listener's connection bookkeeping), fsync policy names
// and the worker's --allow-exec command lines (framing: tests/fuzz/make_seeds.py). Each must accept or refuse
// with a status, never crash.
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "master/listener.h"
#include "master/store.h"
#include "worker/exec_config.h"
#include "tests/fuzz/fuzz_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskq::fuzz::FuzzReader in(data, size);
  const std::string token_file = in.String(/*wide=*/true);
  const std::string header = in.String(/*wide=*/true);
  const std::string peer = in.String();
  const std::string policy = in.String();
  const std::string command_line = in.String(/*wide=*/true);

  static const std::string path = [] {
    std::string tmpl = "/tmp/taskq-token-fuzz-XXXXXX";
    int fd = mkstemp(tmpl.data());
    if (fd >= 0) close(fd);
    return tmpl;
  }();
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd >= 0) {
    (void)!::write(fd, token_file.data(), token_file.size());
    ::fchmod(fd, 0600);
    ::close(fd);
  }
  auto token = taskq::LoadToken(path);
  taskq::LoadMasterToken(path).IgnoreError();  // the strength check too
  if (token.ok()) {
    taskq::BearerMatches(header, *token);
    taskq::BearerMatches(taskq::BearerValue(*token), *token);
  }
  taskq::PeerKey(peer);
  taskq::ParseFsyncPolicy(policy).IgnoreError();
  taskq::SplitCommandLine(command_line).IgnoreError();
  taskq::ParseAllowExec(command_line).IgnoreError();
  return 0;
}
