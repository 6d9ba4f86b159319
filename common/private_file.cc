#include "common/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace taskq {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(err)));
}

// Writes all of `content` to `fd`, then fsyncs; 0 or the errno.
int WriteAllAndSync(int fd, absl::string_view content) {
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<size_t>(n);
  }
  return ::fsync(fd) == 0 ? 0 : errno;
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::Status ReplacePrivateFile(const std::string& path, absl::string_view content) {
  // Beside the target (same file system: rename is atomic); mkstemp
  // creates it 0600 with a name no one else can have picked.
  std::string tmp = absl::StrCat(path, ".tmp.XXXXXX");
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return ErrnoError("create a file beside", path, errno);
  int err = ::fchmod(fd, 0600) == 0 ? 0 : errno;
  if (err == 0) err = WriteAllAndSync(fd, content);
  ::close(fd);
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return ErrnoError("write", path, err);
  }
  // The rename itself must survive a power cut (best effort: the file is
  // whole either way).
  if (int dfd = ::open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::Status CreatePrivateFile(const std::string& path, absl::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("create", path, errno);
  const int err = WriteAllAndSync(fd, content);
  ::close(fd);
  if (err != 0) {
    ::unlink(path.c_str());
    return ErrnoError("write", path, err);
  }
  return absl::OkStatus();
}

}  // namespace taskq
