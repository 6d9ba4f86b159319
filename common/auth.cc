#include "common/auth.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/token_strength.h"

namespace taskq {
namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  int err = errno;
  return absl::Status(err == ENOENT ? absl::StatusCode::kNotFound
                                    : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

absl::Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return absl::OkStatus();
  auto slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    if (auto s = MakeDirs(dir.substr(0, slash)); !s.ok()) return s;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("cannot create directory", dir);
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultTokenPath() {
  if (const char* env = std::getenv("TASKQ_TOKEN_FILE"); env && *env) return env;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg) {
    return absl::StrCat(xdg, "/taskq/token");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home && *home ? home : ".", "/.config/taskq/token");
}

absl::StatusOr<std::string> LoadToken(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open token file", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoStatus("cannot stat token file", path);
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "token file ", path, " is accessible by group or others; run: chmod 600 ", path));
  }
  std::string data;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return ErrnoStatus("cannot read token file", path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxTokenBytes) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is too large"));
    }
  }
  ::close(fd);
  std::string token(absl::StripAsciiWhitespace(data));
  if (token.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("token file ", path, " is empty"));
  }
  return token;
}

absl::StatusOr<std::string> LoadOrCreateToken(const std::string& path) {
  auto loaded = LoadToken(path);
  if (loaded.ok() || !absl::IsNotFound(loaded.status())) return loaded;
  auto slash = path.rfind('/');
  if (slash != std::string::npos) {
    if (auto s = MakeDirs(path.substr(0, slash)); !s.ok()) return s;
  }
  unsigned char raw[32];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = ::getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError("getrandom failed");
    got += static_cast<size_t>(n);
  }
  std::string token = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  // O_EXCL: if another process created it meanwhile, use theirs.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return LoadToken(path);
    return ErrnoStatus("cannot create token file", path);
  }
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = (::fsync(fd) == 0) && ok;
  ::close(fd);
  if (!ok) return ErrnoStatus("cannot write token file", path);
  return token;
}

absl::StatusOr<std::string> LoadMasterToken(const std::string& path) {
  auto token = LoadOrCreateToken(path);
  if (!token.ok()) return token;
  if (absl::Status s = CheckTokenStrength(*token, path); !s.ok()) return s;
  return token;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Always walk the expected length (b); fold the length difference in.
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) {
    unsigned char ca = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    diff = diff | (ca ^ static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

std::string BearerValue(absl::string_view token) { return absl::StrCat(kBearerPrefix, token); }

bool BearerMatches(absl::string_view header_value, absl::string_view expected) {
  absl::string_view prefix(kBearerPrefix);
  if (header_value.size() > kMaxTokenBytes + prefix.size()) return false;
  if (header_value.substr(0, prefix.size()) != prefix) return false;
  return ConstantTimeEquals(header_value.substr(prefix.size()), expected);
}

}  // namespace taskq
