#include "master/wal_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace taskq {

namespace {

constexpr uint64_t kHeaderBytes = 32;
constexpr uint64_t kFrameHeaderBytes = 24;
constexpr uint32_t kMagic = 0x377f0682;  // | 1: checksums over big-endian words
constexpr uint32_t kVersion = 3007000;

uint32_t Be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t Le32(const unsigned char* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | p[0];
}

bool ValidPageSize(uint32_t size) {
  return size >= 512 && size <= 65536 && (size & (size - 1)) == 0;
}

// SQLite's WAL checksum: over pairs of 32-bit words, carried on in `sum`.
void Checksum(bool big_endian, const unsigned char* data, size_t bytes, uint32_t sum[2]) {
  uint32_t s1 = sum[0], s2 = sum[1];
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    const uint32_t a = big_endian ? Be32(data + i) : Le32(data + i);
    const uint32_t b = big_endian ? Be32(data + i + 4) : Le32(data + i + 4);
    s1 += a + s2;
    s2 += b + s1;
  }
  sum[0] = s1;
  sum[1] = s2;
}

// Reads at offsets (pread: one call per frame; SQLite's own recovery
// reads the same bytes).
class Reader {
 public:
  explicit Reader(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~Reader() {
    if (fd_ >= 0) ::close(fd_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  bool ok() const { return fd_ >= 0; }
  // Reads up to `n` bytes at `offset`; how many were read.
  size_t ReadAt(uint64_t offset, unsigned char* out, size_t n) {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  const int fd_;
};

}  // namespace

absl::StatusOr<WalReport> InspectWal(const std::string& path, uint32_t db_page_size) {
  WalReport r;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return r;  // no log: nothing to recover
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", path, ": ", strerror(errno)));
  }
  r.file_bytes = static_cast<uint64_t>(st.st_size);
  if (r.file_bytes == 0) return r;
  Reader in(path);
  if (!in.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", path, ": ", strerror(errno)));
  }

  unsigned char header[kHeaderBytes] = {};
  const size_t got = in.ReadAt(0, header, kHeaderBytes);
  const uint32_t magic = Be32(header);
  const bool big_endian = (magic & 1) != 0;
  uint32_t sum[2] = {0, 0};
  if (got == kHeaderBytes) Checksum(big_endian, header, 24, sum);
  r.header_valid = got == kHeaderBytes && (magic & ~uint32_t{1}) == kMagic &&
                   Be32(header + 4) == kVersion && ValidPageSize(Be32(header + 8)) &&
                   sum[0] == Be32(header + 24) && sum[1] == Be32(header + 28);
  r.page_size = ValidPageSize(Be32(header + 8))  ? Be32(header + 8)
                : ValidPageSize(db_page_size)    ? db_page_size
                                                 : 0;
  if (r.page_size == 0) {
    // Frames cannot be told apart: count the whole file as dropped frames
    // of unknown kind (never a torn tail once it holds more than a header).
    r.dropped_bytes = r.file_bytes;
    if (r.file_bytes > kHeaderBytes) r.dropped_commits = 2;
    return r;
  }
  const uint64_t frame_bytes = kFrameHeaderBytes + r.page_size;
  const uint64_t slots = r.file_bytes < kHeaderBytes + kFrameHeaderBytes
                             ? 0
                             : (r.file_bytes - kHeaderBytes - kFrameHeaderBytes) / frame_bytes + 1;
  auto slot_offset = [&](uint64_t i) { return kHeaderBytes + i * frame_bytes; };
  std::vector<unsigned char> frame(frame_bytes);

  // The salts frames of this log carry: the header's, or (damaged header)
  // the first pair two neighbouring frames agree on.
  unsigned char salts[8];
  std::memcpy(salts, header + 16, 8);
  if (!r.header_valid) {
    unsigned char prev[8] = {};
    for (uint64_t i = 0; i < slots && i < 16; ++i) {
      unsigned char h[kFrameHeaderBytes];
      if (in.ReadAt(slot_offset(i), h, kFrameHeaderBytes) != kFrameHeaderBytes) break;
      if (i == 0) std::memcpy(salts, h + 8, 8);
      if (i > 0 && std::memcmp(prev, h + 8, 8) == 0) {
        std::memcpy(salts, h + 8, 8);
        break;
      }
      std::memcpy(prev, h + 8, 8);
    }
  }

  // What SQLite's recovery keeps: valid frames from the start, up to the
  // last commit frame among them.
  uint64_t first_dropped = 0;
  if (r.header_valid) {
    for (uint64_t i = 0; i < slots; ++i) {
      if (in.ReadAt(slot_offset(i), frame.data(), frame_bytes) != frame_bytes) break;
      if (std::memcmp(frame.data() + 8, salts, 8) != 0 || Be32(frame.data()) == 0) break;
      uint32_t next[2] = {sum[0], sum[1]};
      Checksum(big_endian, frame.data(), 8, next);
      Checksum(big_endian, frame.data() + kFrameHeaderBytes, r.page_size, next);
      if (next[0] != Be32(frame.data() + 16) || next[1] != Be32(frame.data() + 20)) break;
      sum[0] = next[0];
      sum[1] = next[1];
      if (Be32(frame.data() + 4) != 0) {
        ++r.kept_transactions;
        r.kept_frames = i + 1;
      }
    }
    first_dropped = r.kept_frames;
  }
  r.kept_bytes = r.kept_frames > 0 ? slot_offset(r.kept_frames) : 0;
  r.dropped_bytes = r.file_bytes - r.kept_bytes;

  // What it drops: frames of this log's generation, and which end a
  // transaction (their checksums cannot be trusted after the damage).
  uint64_t last_commit = 0, last_frame = 0;
  for (uint64_t i = first_dropped; i < slots; ++i) {
    unsigned char h[kFrameHeaderBytes];
    if (in.ReadAt(slot_offset(i), h, kFrameHeaderBytes) != kFrameHeaderBytes) break;
    if (std::memcmp(h + 8, salts, 8) != 0) continue;
    ++r.dropped_frames;
    last_frame = i;
    if (Be32(h + 4) != 0) {
      ++r.dropped_commits;
      last_commit = i;
    }
  }
  r.dropped_commit_is_last = r.dropped_commits > 0 && last_commit == last_frame;
  return r;
}

namespace {

// Copies `from` to a new file `to` (0600) and syncs it.
absl::Status CopyAside(const std::string& from, const std::string& to) {
  Reader in(from);
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (!in.ok() || out < 0) {
    const std::string why = strerror(errno);
    if (out >= 0) ::close(out);
    return absl::FailedPreconditionError(absl::StrCat("cannot copy ", from, " to ", to, ": ", why));
  }
  std::vector<unsigned char> buffer(1 << 20);
  uint64_t offset = 0;
  absl::Status status;
  for (;;) {
    const size_t n = in.ReadAt(offset, buffer.data(), buffer.size());
    if (n == 0) break;
    if (::write(out, buffer.data(), n) != static_cast<ssize_t>(n)) {
      status = absl::FailedPreconditionError(
          absl::StrCat("cannot copy ", from, " to ", to, ": ", strerror(errno)));
      break;
    }
    offset += n;
  }
  if (status.ok() && ::fsync(out) != 0) {
    status = absl::FailedPreconditionError(absl::StrCat("cannot sync ", to, ": ", strerror(errno)));
  }
  ::close(out);
  if (!status.ok()) ::unlink(to.c_str());
  return status;
}

// Cuts `path` back to `bytes` and syncs the change.
absl::Status CutBack(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0 || ::fsync(fd) != 0) {
    const std::string why = strerror(errno);
    if (fd >= 0) ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot cut ", path, " back to ", bytes, " bytes: ", why));
  }
  ::close(fd);
  return absl::OkStatus();
}

std::string Damage(const WalReport& r) {
  return absl::StrCat(r.dropped_commits, " committed transactions (", r.dropped_frames,
                      " frames) in the ", r.dropped_bytes, " bytes after byte ", r.kept_bytes,
                      r.header_valid ? "" : " (its header is damaged too)");
}

}  // namespace

absl::StatusOr<WalReport> PrepareWal(const std::string& path, uint32_t db_page_size,
                                     bool recover_truncate) {
  absl::StatusOr<WalReport> report = InspectWal(path, db_page_size);
  if (!report.ok() || report->dropped_bytes == 0) return report;
  if (report->dropped_frames == 0 && report->file_bytes <= kHeaderBytes) {
    report->dropped_bytes = 0;  // a log with no frame (yet): nothing to say
    return report;
  }
  if (!report->TornTail()) {
    if (!recover_truncate) {
      return absl::DataLossError(absl::StrCat(
          "the write-ahead log ", path, " is damaged before its end, not just torn by a crash: "
          "SQLite would keep its first ", report->kept_transactions,
          " transactions and silently drop ", Damage(*report),
          ". The master does not start on it. Restore the --data-dir from a backup, or start "
          "once with --recover-truncate to accept losing them (the damaged log is copied aside "
          "first)"));
    }
    const std::string copy = absl::StrCat(
        path, ".damaged-", absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()));
    if (absl::Status s = CopyAside(path, copy); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          s.message(), "; --recover-truncate keeps a copy of the damaged log before cutting it "
                       "back: free some space or copy ", path, " elsewhere yourself"));
    }
    if (absl::Status s = CutBack(path, report->kept_bytes); !s.ok()) return s;
    LogError("store: --recover-truncate: the write-ahead log %s was damaged; dropped %s, kept "
             "the %d transactions before it. The damaged log is in %s",
             path, Damage(*report), report->kept_transactions, copy);
    report->dropped_bytes = 0;  // reported here already
    return report;
  }
  // A torn tail: SQLite would drop it; cutting it off leaves nothing that a
  // later crash could mistake for damage.
  if (absl::Status s = CutBack(path, report->kept_bytes); !s.ok()) return s;
  return report;
}

std::string TornTailMessage(const WalReport& r, const std::string& path,
                            const std::string& fsync_policy) {
  if (r.dropped_frames == 0) {
    return absl::StrCat("store: dropped ", r.dropped_bytes, " bytes at the end of the write-ahead "
                        "log ", path, " that belong to no transaction of it (frames of an older, "
                        "checkpointed log, or a frame header cut short); nothing was lost");
  }
  std::string acked;
  if (r.dropped_commits == 0) {
    acked = "It has no commit record: it was never committed, so never acknowledged (unless "
            "its last bytes were damaged after being written).";
  } else if (fsync_policy == "always") {
    acked = "Its commit record is there but damaged or cut short. The run that wrote it used "
            "--fsync always, whose replies wait for the sync: if a crash cut this write short, "
            "it had not been acknowledged; if its bytes were damaged after the sync, it had.";
  } else if (!fsync_policy.empty()) {
    acked = absl::StrCat("Its commit record is there but damaged or cut short. The run that "
                         "wrote it used --fsync ", fsync_policy, ", whose replies do not wait "
                         "for a sync: it may have been acknowledged.");
  } else {
    acked = "Its commit record is there but damaged or cut short, and the fsync policy of the "
            "run that wrote it is not recorded: it may have been acknowledged.";
  }
  return absl::StrCat("store: the write-ahead log ", path, " ended in a torn transaction (",
                      r.dropped_frames, " frames, ", r.dropped_bytes, " bytes), which was "
                      "dropped; the ", r.kept_transactions, " transactions before it were "
                      "recovered. ", acked);
}

}  // namespace taskq
