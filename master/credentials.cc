#include "master/credentials.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/x509.h"
#include "common/private_file.h"

namespace taskq {
namespace {

constexpr char kTokenPrefix[] = "tq1";
constexpr size_t kTokenIdHexChars = 16;
constexpr size_t kSecretBytes = 32;           // 256 bits
constexpr size_t kSecretChars = 43;           // base64url, no padding
constexpr size_t kSaltBytes = 16;
// The file holds at most kMaxCredentials entries of a few hundred bytes
// (certificate credentials keep only a hash): anything far larger is not
// ours.
constexpr size_t kMaxFileBytes = size_t{64} << 20;
// A certificate credential without --expires: one year.
constexpr absl::Duration kDefaultCertificateValidity = absl::Hours(24 * 365);
// Longest --expires (keeps the arithmetic far from overflow).
constexpr uint64_t kMaxExpiresInMs = uint64_t{100} * 365 * 24 * 3600 * 1000;

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  const int err = errno;
  return absl::FailedPreconditionError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

std::string HashSecret(absl::string_view salt, absl::string_view secret) {
  return Sha256(absl::StrCat(salt, secret));
}

std::string FormatTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsBase64Url(absl::string_view s) {
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}



absl::StatusOr<v1::StoredCredentials> ReadFile(const std::string& path) {
  v1::StoredCredentials stored;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return stored;
    return ErrnoStatus("cannot open the credentials file", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoStatus("cannot stat the credentials file", path);
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "the credentials file ", path, " is accessible by group or others; run: chmod 600 ",
        path));
  }
  if (static_cast<size_t>(st.st_size) > kMaxFileBytes) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("the credentials file ", path, " is larger than ", kMaxFileBytes, " bytes"));
  }
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return ErrnoStatus("cannot read the credentials file", path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxFileBytes) break;
  }
  ::close(fd);
  if (!stored.ParseFromString(data)) {
    return absl::DataLossError(
        absl::StrCat("the credentials file ", path, " is damaged (not a StoredCredentials)"));
  }
  return stored;
}

}  // namespace

std::string RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_ADMIN:
      return "admin";
    case v1::ROLE_PRODUCER:
      return "producer";
    case v1::ROLE_WORKER:
      return "worker";
    case v1::ROLE_READER:
      return "reader";
    default:
      return "unspecified";
  }
}

absl::Status ValidateCredentialName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxCredentialNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a credential name has 1-", kMaxCredentialNameBytes, " characters (got ", name.size(), ")"));
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
          c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "credential name \"", absl::CHexEscape(name),
          "\" has a character outside [A-Za-z0-9_.-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateQueuePatterns(const std::vector<std::string>& patterns) {
  if (patterns.empty()) {
    return absl::InvalidArgumentError(
        "give the queues the credential may use (--queues PATTERN..., e.g. tasks 'img.*'; '*' = "
        "every queue)");
  }
  if (patterns.size() > kMaxCredentialPatterns) {
    return absl::InvalidArgumentError(absl::StrCat(patterns.size(), " queue patterns; at most ",
                                                   kMaxCredentialPatterns));
  }
  for (const std::string& p : patterns) {
    if (p.empty() || p.size() > kMaxCredentialPatternBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a queue pattern has 1-", kMaxCredentialPatternBytes, " characters (got ", p.size(), ")"));
    }
    for (char c : p) {
      if (!absl::ascii_isgraph(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "queue pattern \"", absl::CHexEscape(p), "\" has a space or control character"));
      }
    }
  }
  return absl::OkStatus();
}

CredentialTable::CredentialTable(std::string path, std::string master_token)
    : path_(std::move(path)), master_token_(std::move(master_token)) {}

absl::StatusOr<std::unique_ptr<CredentialTable>> CredentialTable::Open(std::string path,
                                                                       std::string master_token) {
  auto stored = ReadFile(path);
  if (!stored.ok()) return stored.status();
  std::unique_ptr<CredentialTable> table(
      new CredentialTable(std::move(path), std::move(master_token)));
  MutexLock lock(&table->mu_);
  table->stored_ = *std::move(stored);
  table->IndexLocked();
  return table;
}

void CredentialTable::IndexLocked() {
  by_name_.clear();
  by_token_id_.clear();
  by_certificate_.clear();
  for (int i = 0; i < stored_.credentials_size(); ++i) {
    const v1::StoredCredential& c = stored_.credentials(i);
    by_name_[c.info().name()] = i;
    if (!c.token_id().empty()) by_token_id_[c.token_id()] = i;
    if (!c.info().certificate_sha256().empty()) by_certificate_[c.info().certificate_sha256()] = i;
  }
}

int64_t CredentialTable::NowMsLocked() const {
  return clock_ ? clock_() : absl::ToUnixMillis(absl::Now());
}

void CredentialTable::SetClockForTest(std::function<int64_t()> now_unix_ms) {
  MutexLock lock(&mu_);
  clock_ = std::move(now_unix_ms);
}

absl::StatusOr<CredentialTable::Principal> CredentialTable::Usable(
    const v1::StoredCredential& c) const {
  const v1::CredentialInfo& info = c.info();
  if (info.revoked_unix_ms() != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("credential \"", info.name(), "\" was revoked"));
  }
  if (info.expires_unix_ms() != 0 && NowMsLocked() >= info.expires_unix_ms()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "credential \"", info.name(), "\" expired at ", FormatTime(info.expires_unix_ms())));
  }
  Principal p;
  p.name = info.name();
  p.role = info.role();
  p.queues.assign(info.queues().begin(), info.queues().end());
  p.kind = info.kind();
  return p;
}

namespace {
CredentialTable::Principal MasterPrincipal() {
  CredentialTable::Principal p;
  p.name = kMasterTokenCredential;
  p.role = v1::ROLE_ADMIN;
  p.queues = {"*"};
  p.kind = v1::CREDENTIAL_KIND_MASTER_TOKEN;
  return p;
}
absl::Status UnknownToken() { return absl::UnauthenticatedError("unknown token"); }
}  // namespace

absl::StatusOr<CredentialTable::Principal> CredentialTable::AuthenticateToken(
    absl::string_view token) const {
  if (token.size() > kMaxTokenBytes) return UnknownToken();
  if (!master_token_.empty() && ConstantTimeEquals(token, master_token_)) {
    return MasterPrincipal();
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0] != kTokenPrefix || parts[1].size() != kTokenIdHexChars ||
      !IsLowerHex(parts[1]) || parts[2].size() != kSecretChars || !IsBase64Url(parts[2])) {
    return UnknownToken();
  }
  MutexLock lock(&mu_);
  auto it = by_token_id_.find(parts[1]);
  if (it == by_token_id_.end()) return UnknownToken();
  const v1::StoredCredential& c = stored_.credentials(it->second);
  if (!ConstantTimeEquals(HashSecret(c.salt(), parts[2]), c.secret_hash())) return UnknownToken();
  return Usable(c);
}

absl::StatusOr<CredentialTable::Principal> CredentialTable::AuthenticateCertificate(
    absl::string_view sha256_hex) const {
  MutexLock lock(&mu_);
  auto it = by_certificate_.find(absl::AsciiStrToLower(sha256_hex));
  if (it == by_certificate_.end()) {
    return absl::UnauthenticatedError(
        "unknown client certificate: it is signed by the master's CA but no credential holds it");
  }
  return Usable(stored_.credentials(it->second));
}

absl::StatusOr<CredentialTable::Principal> CredentialTable::Find(absl::string_view name) const {
  if (name == kMasterTokenCredential && !master_token_.empty()) return MasterPrincipal();
  MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::UnauthenticatedError(absl::StrCat("unknown credential \"", name, "\""));
  }
  return Usable(stored_.credentials(it->second));
}

absl::StatusOr<v1::CreateCredentialResponse> CredentialTable::Create(
    const v1::CreateCredentialRequest& req, absl::string_view created_by, const KeyAndCert* ca) {
  if (absl::Status s = ValidateCredentialName(req.name()); !s.ok()) return s;
  if (req.name() == kMasterTokenCredential) {
    return absl::AlreadyExistsError(
        absl::StrCat("\"", kMasterTokenCredential, "\" is the master token's name"));
  }
  if (req.role() != v1::ROLE_ADMIN && req.role() != v1::ROLE_PRODUCER &&
      req.role() != v1::ROLE_WORKER && req.role() != v1::ROLE_READER) {
    return absl::InvalidArgumentError("give a role: admin, producer, worker or reader");
  }
  std::vector<std::string> queues(req.queues().begin(), req.queues().end());
  if (req.role() == v1::ROLE_ADMIN && queues.empty()) queues.push_back("*");
  if (absl::Status s = ValidateQueuePatterns(queues); !s.ok()) return s;
  if (req.expires_in_ms() > kMaxExpiresInMs) {
    return absl::InvalidArgumentError("a credential expires within 100 years at most");
  }
  const bool certificate = !req.public_key_pem().empty();
  if (certificate && ca == nullptr) {
    return absl::FailedPreconditionError(
        "this master has no CA to sign client certificates: run `taskq-master init` first, or "
        "create a token credential (without --cert)");
  }
  if (req.public_key_pem().size() > 16384) {
    return absl::InvalidArgumentError("the public key PEM is larger than 16 KiB");
  }

  MutexLock lock(&mu_);
  if (by_name_.contains(req.name())) {
    return absl::AlreadyExistsError(absl::StrCat(
        "credential \"", req.name(), "\" exists (revoked names stay taken; pick another)"));
  }
  if (static_cast<size_t>(stored_.credentials_size()) >= kMaxCredentials) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the master holds ", kMaxCredentials, " credentials, the most it keeps"));
  }
  const int64_t now = NowMsLocked();
  v1::CreateCredentialResponse resp;
  v1::StoredCredential stored;
  v1::CredentialInfo* info = stored.mutable_info();
  info->set_name(req.name());
  info->set_role(req.role());
  for (const std::string& q : queues) info->add_queues(q);
  info->set_created_unix_ms(now);
  if (req.expires_in_ms() != 0) {
    info->set_expires_unix_ms(now + static_cast<int64_t>(req.expires_in_ms()));
  }
  info->set_created_by(std::string(created_by));
  if (certificate) {
    const absl::Duration validity = req.expires_in_ms() != 0
                                        ? absl::Milliseconds(req.expires_in_ms())
                                        : kDefaultCertificateValidity;
    auto cert = SignClientCert(*ca, req.public_key_pem(), req.name(), validity);
    if (!cert.ok()) return cert.status();
    auto fingerprint = CertificateSha256Hex(*cert);
    if (!fingerprint.ok()) return fingerprint.status();
    info->set_kind(v1::CREDENTIAL_KIND_CERTIFICATE);
    info->set_certificate_sha256(*fingerprint);
    if (info->expires_unix_ms() == 0) {
      info->set_expires_unix_ms(now + absl::ToInt64Milliseconds(validity));
    }
    resp.set_certificate_pem(*cert);
  } else {
    std::string id;
    do {
      id = absl::BytesToHexString(RandomBytes(kTokenIdHexChars / 2));
    } while (by_token_id_.contains(id));
    std::string secret = absl::WebSafeBase64Escape(RandomBytes(kSecretBytes));
    stored.set_token_id(id);
    stored.set_salt(RandomBytes(kSaltBytes));
    stored.set_secret_hash(HashSecret(stored.salt(), secret));
    info->set_kind(v1::CREDENTIAL_KIND_TOKEN);
    resp.set_token(absl::StrCat(kTokenPrefix, ".", id, ".", secret));
  }
  *resp.mutable_credential() = *info;
  v1::StoredCredentials next = stored_;
  *next.add_credentials() = std::move(stored);
  if (absl::Status s = CommitLocked(std::move(next)); !s.ok()) return s;
  return resp;
}

absl::Status CredentialTable::Revoke(absl::string_view name) {
  if (name == kMasterTokenCredential && !master_token_.empty()) {
    return absl::FailedPreconditionError(
        "the master token cannot be revoked: replace the master's --token-file and restart it");
  }
  std::vector<std::function<void(const std::string&)>> listeners;
  {
    MutexLock lock(&mu_);
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat("no credential \"", name, "\""));
    }
    if (stored_.credentials(it->second).info().revoked_unix_ms() == 0) {
      v1::StoredCredentials next = stored_;
      next.mutable_credentials(it->second)->mutable_info()->set_revoked_unix_ms(NowMsLocked());
      if (absl::Status s = CommitLocked(std::move(next)); !s.ok()) return s;
    }
    listeners = listeners_;
  }
  const std::string n(name);
  for (const auto& listener : listeners) listener(n);
  return absl::OkStatus();
}

std::vector<v1::CredentialInfo> CredentialTable::List(bool include_revoked) const {
  std::vector<v1::CredentialInfo> out;
  if (!master_token_.empty()) {
    v1::CredentialInfo& m = out.emplace_back();
    m.set_name(kMasterTokenCredential);
    m.set_role(v1::ROLE_ADMIN);
    m.add_queues()->assign(1, '*');  // (not add_queues("*"): GCC 12 -Wrestrict false positive)
    m.set_kind(v1::CREDENTIAL_KIND_MASTER_TOKEN);
  }
  MutexLock lock(&mu_);
  for (const v1::StoredCredential& c : stored_.credentials()) {
    if (!include_revoked && c.info().revoked_unix_ms() != 0) continue;
    out.push_back(c.info());
  }
  return out;
}

void CredentialTable::OnRevoked(std::function<void(const std::string& name)> listener) {
  MutexLock lock(&mu_);
  listeners_.push_back(std::move(listener));
}

absl::Status CredentialTable::CommitLocked(v1::StoredCredentials next) {
  if (absl::Status s = ReplacePrivateFile(path_, next.SerializeAsString()); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  stored_ = std::move(next);
  IndexLocked();
  return absl::OkStatus();
}

}  // namespace taskq
