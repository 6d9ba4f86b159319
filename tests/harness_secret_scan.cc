#include "tests/harness_secret_scan.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"

namespace taskq::testing {
namespace {

namespace fs = std::filesystem;

constexpr uintmax_t kMaxScannedBytes = uintmax_t{64} << 20;
// Shorter "secrets" (e.g. a test's deliberately weak token "abc") would
// match ordinary text by chance.
constexpr size_t kMinSecretBytes = 16;

std::string ReadWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsBase64UrlChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_'; }
bool IsBase64Char(char c) { return absl::ascii_isalnum(c) || c == '+' || c == '/'; }

struct Secret {
  std::string value;
  std::string source;
};

// The secret parts of `tq1.<16 hex>.<43 base64url>` tokens in `text`.
void CollectCredentialTokens(const std::string& text, const std::string& source,
                             std::vector<Secret>* out) {
  for (size_t at = text.find("tq1."); at != std::string::npos; at = text.find("tq1.", at + 1)) {
    size_t id_end = at + 4;
    while (id_end < text.size() && absl::ascii_isxdigit(text[id_end])) ++id_end;
    if (id_end - (at + 4) != 16 || id_end >= text.size() || text[id_end] != '.') continue;
    size_t secret_end = id_end + 1;
    while (secret_end < text.size() && IsBase64UrlChar(text[secret_end])) ++secret_end;
    if (secret_end - (id_end + 1) < 32) continue;
    out->push_back({text.substr(id_end + 1, secret_end - id_end - 1), source});
  }
}

// Every base64 line (40+ characters) of every PEM private key in `text`;
// a key inside a text-format bundle has its newlines escaped.
void CollectPrivateKeys(std::string text, const std::string& source, std::vector<Secret>* out) {
  if (!absl::StrContains(text, "PRIVATE KEY-----")) return;
  text = absl::StrReplaceAll(text, {{"\\n", "\n"}});
  for (size_t at = text.find("PRIVATE KEY-----"); at != std::string::npos;) {
    size_t end = text.find("-----END", at);
    if (end == std::string::npos) break;
    size_t i = at + 16;
    while (i < end) {
      size_t run = i;
      while (run < end && IsBase64Char(text[run])) ++run;
      if (run - i >= 40) out->push_back({text.substr(i, run - i), source});
      i = run + 1;
    }
    at = text.find("PRIVATE KEY-----", end + 8);
  }
}

bool IsLog(const fs::path& path) {
  const std::string name = path.filename().string();
  if (absl::EndsWith(name, ".err") || absl::EndsWith(name, ".log")) return true;
  // Daemons' stdout is a log; a CLI's stdout is its output.
  return absl::EndsWith(name, ".out") &&
         (absl::StrContains(name, "master") || absl::StrContains(name, "worker"));
}

}  // namespace

std::vector<LeakedSecret> FindSecretsInLogs(const std::string& dir) {
  std::vector<Secret> secrets;
  std::vector<fs::path> logs;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied,
                                           ec),
       end;
       !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->file_size(ec) > kMaxScannedBytes) continue;
    const fs::path& path = it->path();
    if (IsLog(path)) logs.push_back(path);
    const std::string text = ReadWhole(path);
    const std::string source = path.string();
    if (absl::StrContains(path.filename().string(), "token") && text.size() < 4096) {
      std::string token(absl::StripAsciiWhitespace(text));
      if (token.size() >= kMinSecretBytes) secrets.push_back({token, source});
    }
    CollectCredentialTokens(text, source, &secrets);
    CollectPrivateKeys(text, source, &secrets);
  }
  // One report per secret and log, however many files hold the secret.
  absl::flat_hash_set<std::string> seen;
  std::vector<Secret> unique;
  for (Secret& s : secrets) {
    if (seen.insert(s.value).second) unique.push_back(std::move(s));
  }
  std::vector<LeakedSecret> leaks;
  for (const fs::path& log : logs) {
    const std::string text = ReadWhole(log);
    for (const Secret& s : unique) {
      if (s.value.size() >= kMinSecretBytes && absl::StrContains(text, s.value)) {
        leaks.push_back({s.value.substr(0, 6), s.source, log.string()});
      }
    }
  }
  return leaks;
}

void ExpectNoSecretsInLogs(const std::string& dir) {
  for (const LeakedSecret& leak : FindSecretsInLogs(dir)) {
    ADD_FAILURE() << "a secret (" << leak.secret_prefix << "..., from " << leak.found_in
                  << ") appears in the log " << leak.log_file;
  }
}

}  // namespace taskq::testing
