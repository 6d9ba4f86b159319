#include "master/wal_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

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

}  // namespace taskq
