// Hostile-client tools for integration tests: a minimal raw HTTP/2 client
// (plaintext, prior knowledge) that can do what a well-behaved gRPC client
// never does — announce a 64 MiB message and send it slowly, open streams
// without a token, stop reading — and plain idle TCP connections.
//
// The client sends what it is told, answers the server's SETTINGS and
// PINGs, honours flow control, and records which streams the server ended
// (RST_STREAM, or HEADERS with END_STREAM: a gRPC status). It does not
// decode the server's headers (HPACK with Huffman coding is not needed to
// tell "refused at once" from "still reading").
//
// Thread-safety: none; one test thread per object.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq::testing {

// A TCP connection to HOST:PORT (blocking connect); -1 on failure.
int ConnectTcp(const std::string& address);

// True if the peer closed `fd` (EOF or reset) within `timeout`; data that
// arrives meanwhile is read and dropped.
bool WaitPeerClosed(int fd, absl::Duration timeout);

class RawHttp2Client {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  static absl::StatusOr<std::unique_ptr<RawHttp2Client>> Connect(const std::string& address);
  ~RawHttp2Client();

  // Opens a gRPC call: HEADERS for POST `path` plus `extra` (e.g. the
  // authorization header). Returns the stream id.
  int OpenGrpcStream(const std::string& path, const Headers& extra = {});
  // Sends a gRPC message prefix announcing `length` bytes (not the bytes).
  void SendMessagePrefix(int stream, uint32_t length);
  // Sends up to `bytes` bytes of filler on `stream` as flow control allows,
  // reading the server's frames meanwhile, until done or `deadline`.
  // Returns how many were sent.
  size_t SendFiller(int stream, size_t bytes, absl::Time deadline);
  // Sends `data` as DATA frames (flow control permitting), `end_stream` on
  // the last one.
  size_t SendData(int stream, absl::string_view data, bool end_stream, absl::Time deadline);
  // Reads and answers server frames for `d`.
  void Pump(absl::Duration d);

  // The server ended the stream (reset it, or sent its trailers).
  bool Ended(int stream) const;
  // The server closed the connection (or it broke).
  bool closed() const { return closed_; }

 private:
  explicit RawHttp2Client(int fd) : fd_(fd) {}
  void WriteFrame(uint8_t type, uint8_t flags, uint32_t stream, absl::string_view payload);
  // Reads whatever the server sent, waiting up to `wait`; false if closed.
  bool ReadFrames(absl::Duration wait);
  void HandleFrame(uint8_t type, uint8_t flags, uint32_t stream, absl::string_view payload);

  int fd_;
  bool closed_ = false;
  std::string inbuf_;
  uint32_t next_stream_ = 1;
  int64_t conn_window_ = 65535;
  int64_t initial_window_ = 65535;
  uint32_t max_frame_ = 16384;
  std::map<uint32_t, int64_t> stream_window_;
  std::map<uint32_t, bool> ended_;
};

}  // namespace taskq::testing
