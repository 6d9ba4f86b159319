#include "common/join_bundle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/private_file.h"

namespace taskq {
namespace {

constexpr char kHeader[] =
    "# taskq join bundle (taskq credential create ... --bundle). It holds a\n"
    "# secret: keep it mode 0600 and give it only to the host that needs it.\n";

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  int err = errno;
  return absl::Status(err == ENOENT ? absl::StatusCode::kNotFound
                                    : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

// Keeps the parser's first errors without the text it choked on: a
// mistyped bundle may put a token where the parser expects a name, and the
// error must not print it.
class RedactingErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (errors_.size() >= 3) return;
    std::string text = message;
    if (auto got = text.find(", got"); got != std::string::npos) text.resize(got);
    // A field name is worth showing (a typo), a long "name" is likely a
    // pasted secret.
    const std::string kNamed = "no field named \"";
    if (auto named = text.find(kNamed); named != std::string::npos) {
      const size_t start = named + kNamed.size();
      const size_t end = text.find('"', start);
      if (end == std::string::npos || end - start > 24) {
        text = absl::StrCat(text.substr(0, start), "...\"");
      }
    }
    errors_.push_back(absl::StrCat("line ", line + 1, " column ", column + 1, ": ", text));
  }
  std::string Summary() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::vector<std::string> errors_;
};

bool HasControlOrSpace(absl::string_view s) {
  for (char c : s) {
    if (absl::ascii_iscntrl(static_cast<unsigned char>(c)) ||
        absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status ValidateJoinBundle(const v1::JoinBundle& bundle) {
  if (bundle.master_size() == 0) {
    return absl::InvalidArgumentError("the join bundle names no master (master: \"HOST:PORT\")");
  }
  for (const std::string& master : bundle.master()) {
    if (master.empty() || HasControlOrSpace(master)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the join bundle has an invalid master address \"",
                       absl::CHexEscape(master), "\""));
    }
  }
  const bool has_cert = !bundle.client_cert_pem().empty();
  const bool has_key = !bundle.client_key_pem().empty();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the join bundle has a client ", has_cert ? "certificate without its key" :
                                                    "key without its certificate"));
  }
  if (bundle.token().empty() && !has_cert) {
    return absl::InvalidArgumentError(
        "the join bundle holds no credential (token, or client_cert_pem and client_key_pem)");
  }
  if (!bundle.token().empty() &&
      (bundle.token().size() > kMaxTokenBytes || HasControlOrSpace(bundle.token()))) {
    // Never echo the token.
    return absl::InvalidArgumentError(
        "the join bundle's token is malformed (too long, or has spaces or control characters)");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JoinBundle> ReadJoinBundle(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open join bundle", path);
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat join bundle", path);
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "join bundle ", path,
        " is accessible by group or others (it holds a secret); run: chmod 600 ", path));
  }
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot read join bundle", path);
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxJoinBundleBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "join bundle ", path, " is larger than ", kMaxJoinBundleBytes, " bytes"));
    }
  }
  v1::JoinBundle bundle;
  google::protobuf::TextFormat::Parser parser;
  RedactingErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(data, &bundle)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "join bundle ", path, " is not a taskq join bundle: ", errors.Summary()));
  }
  if (absl::Status s = ValidateJoinBundle(bundle); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return bundle;
}

absl::Status WriteJoinBundle(const std::string& path, const v1::JoinBundle& bundle) {
  if (absl::Status s = ValidateJoinBundle(bundle); !s.ok()) return s;
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(bundle, &text)) {
    return absl::InternalError("cannot format the join bundle");
  }
  text = absl::StrCat(kHeader, text);
  if (absl::Status s = ReplacePrivateFile(path, text); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("join bundle: ", s.message()));
  }
  return absl::OkStatus();
}

void ApplyJoinBundle(const v1::JoinBundle& bundle, ConnectOptions* options) {
  options->tls = true;
  if (options->master.empty() && options->masters.empty()) {
    options->masters.assign(bundle.master().begin(), bundle.master().end());
  }
  if (options->tls_ca_file.empty() && options->tls_ca_pem.empty()) {
    options->tls_ca_pem = bundle.ca_pem();
  }
  if (options->tls_server_name.empty()) options->tls_server_name = bundle.server_name();
  if (options->token.empty() && options->token_file.empty() &&
      options->client_cert_pem.empty()) {
    options->token = bundle.token();
    options->client_cert_pem = bundle.client_cert_pem();
    options->client_key_pem = bundle.client_key_pem();
  }
}

absl::Status ApplyJoinBundleFile(const std::string& path, ConnectOptions* options) {
  if (path.empty()) return absl::OkStatus();
  auto bundle = ReadJoinBundle(path);
  if (!bundle.ok()) return bundle.status();
  ApplyJoinBundle(*bundle, options);
  return absl::OkStatus();
}

}  // namespace taskq
