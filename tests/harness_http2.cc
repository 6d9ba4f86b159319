#include "tests/harness_http2.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace taskq::testing {

namespace {

constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                  kGoaway = 0x7, kWindowUpdate = 0x8;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4;

void AppendInt(std::string& out, uint8_t first_bits, int prefix_bits, size_t value) {
  const size_t max = (size_t{1} << prefix_bits) - 1;
  if (value < max) {
    out.push_back(static_cast<char>(first_bits | value));
    return;
  }
  out.push_back(static_cast<char>(first_bits | max));
  value -= max;
  while (value >= 128) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// HPACK "literal header field without indexing, new name", no Huffman.
void AppendHeader(std::string& out, absl::string_view name, absl::string_view value) {
  out.push_back(0);
  AppendInt(out, 0, 7, name.size());
  out.append(name.data(), name.size());
  AppendInt(out, 0, 7, value.size());
  out.append(value.data(), value.size());
}

uint32_t Be32(absl::string_view s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) |
         (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | static_cast<uint8_t>(s[at + 3]);
}

std::string Be32Bytes(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 3; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

}  // namespace

int ConnectTcp(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return -1;
  std::string host = address.substr(0, colon);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  return fd;
}

bool WaitPeerClosed(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  for (;;) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left < 0) return false;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno != EINTR) return true;
    if (n <= 0) continue;
    ssize_t got = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (got == 0) return true;
    if (got < 0 && errno != EAGAIN && errno != EINTR) return true;
  }
}

absl::StatusOr<std::unique_ptr<RawHttp2Client>> RawHttp2Client::Connect(
    const std::string& address) {
  int fd = ConnectTcp(address);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto client = std::unique_ptr<RawHttp2Client>(new RawHttp2Client(fd));
  const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  if (::send(fd, preface, sizeof preface - 1, MSG_NOSIGNAL) < 0) {
    return absl::UnavailableError("cannot send the HTTP/2 preface");
  }
  client->WriteFrame(kSettings, 0, 0, "");
  client->Pump(absl::Milliseconds(50));
  return client;
}

RawHttp2Client::~RawHttp2Client() { ::close(fd_); }

void RawHttp2Client::WriteFrame(uint8_t type, uint8_t flags, uint32_t stream,
                                absl::string_view payload) {
  if (closed_) return;
  std::string frame;
  frame.reserve(9 + payload.size());
  const uint32_t len = static_cast<uint32_t>(payload.size());
  frame.push_back(static_cast<char>((len >> 16) & 0xff));
  frame.push_back(static_cast<char>((len >> 8) & 0xff));
  frame.push_back(static_cast<char>(len & 0xff));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  frame += Be32Bytes(stream & 0x7fffffff);
  frame.append(payload.data(), payload.size());
  size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t n = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      ReadFrames(absl::Milliseconds(10));
      continue;
    }
    if (n <= 0) {
      closed_ = true;
      return;
    }
    sent += static_cast<size_t>(n);
  }
}

int RawHttp2Client::OpenGrpcStream(const std::string& path, const Headers& extra) {
  const uint32_t id = next_stream_;
  next_stream_ += 2;
  std::string block;
  AppendHeader(block, ":method", "POST");
  AppendHeader(block, ":scheme", "http");
  AppendHeader(block, ":path", path);
  AppendHeader(block, ":authority", "taskq-test");
  AppendHeader(block, "content-type", "application/grpc");
  AppendHeader(block, "te", "trailers");
  for (const auto& [name, value] : extra) AppendHeader(block, name, value);
  WriteFrame(kHeaders, kEndHeaders, id, block);
  stream_window_[id] = initial_window_;
  ended_[id] = false;
  return static_cast<int>(id);
}

void RawHttp2Client::SendMessagePrefix(int stream, uint32_t length) {
  std::string prefix(1, '\0');
  prefix += Be32Bytes(length);
  SendData(stream, prefix, false, absl::Now() + absl::Seconds(5));
}

size_t RawHttp2Client::SendData(int stream, absl::string_view data, bool end_stream,
                                absl::Time deadline) {
  const uint32_t id = static_cast<uint32_t>(stream);
  size_t sent = 0;
  while (!closed_ && !ended_[id] && (sent < data.size() || (end_stream && data.empty()))) {
    const int64_t window = std::min(conn_window_, stream_window_[id]);
    if (window <= 0 && !data.empty()) {
      if (absl::Now() >= deadline) break;
      ReadFrames(absl::Milliseconds(20));
      continue;
    }
    const size_t n = std::min<size_t>({data.size() - sent, static_cast<size_t>(window),
                                       static_cast<size_t>(max_frame_)});
    const bool last = end_stream && sent + n == data.size();
    WriteFrame(kData, last ? kEndStream : 0, id, data.substr(sent, n));
    conn_window_ -= static_cast<int64_t>(n);
    stream_window_[id] -= static_cast<int64_t>(n);
    sent += n;
    ReadFrames(absl::ZeroDuration());
    if (data.empty()) break;
  }
  return sent;
}

size_t RawHttp2Client::SendFiller(int stream, size_t bytes, absl::Time deadline) {
  const std::string chunk(1 << 16, 'x');
  size_t sent = 0;
  while (sent < bytes && !closed_ && !Ended(stream) && absl::Now() < deadline) {
    const size_t n = std::min(chunk.size(), bytes - sent);
    const size_t done = SendData(stream, absl::string_view(chunk).substr(0, n), false, deadline);
    sent += done;
    if (done < n) break;
  }
  return sent;
}

void RawHttp2Client::Pump(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  do {
    if (!ReadFrames(std::max(absl::ZeroDuration(), std::min(end - absl::Now(),
                                                            absl::Milliseconds(50))))) {
      return;
    }
  } while (absl::Now() < end);
}

bool RawHttp2Client::Ended(int stream) const {
  auto it = ended_.find(static_cast<uint32_t>(stream));
  return closed_ || (it != ended_.end() && it->second);
}

bool RawHttp2Client::ReadFrames(absl::Duration wait) {
  if (closed_) return false;
  pollfd p{fd_, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(wait)));
  if (n <= 0) return true;
  char buf[65536];
  for (;;) {
    ssize_t got = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
      closed_ = true;
      return false;
    }
    if (got < 0) break;
    inbuf_.append(buf, static_cast<size_t>(got));
  }
  while (inbuf_.size() >= 9) {
    const uint32_t len = (uint32_t{static_cast<uint8_t>(inbuf_[0])} << 16) |
                         (uint32_t{static_cast<uint8_t>(inbuf_[1])} << 8) |
                         static_cast<uint8_t>(inbuf_[2]);
    if (inbuf_.size() < 9 + len) break;
    const uint8_t type = static_cast<uint8_t>(inbuf_[3]);
    const uint8_t flags = static_cast<uint8_t>(inbuf_[4]);
    const uint32_t stream = Be32(inbuf_, 5) & 0x7fffffff;
    const std::string payload = inbuf_.substr(9, len);
    inbuf_.erase(0, 9 + len);
    HandleFrame(type, flags, stream, payload);
  }
  return !closed_;
}

void RawHttp2Client::HandleFrame(uint8_t type, uint8_t flags, uint32_t stream,
                                 absl::string_view payload) {
  switch (type) {
    case kSettings:
      if (flags & kAck) return;
      for (size_t at = 0; at + 6 <= payload.size(); at += 6) {
        const uint16_t id = static_cast<uint16_t>((static_cast<uint8_t>(payload[at]) << 8) |
                                                  static_cast<uint8_t>(payload[at + 1]));
        const uint32_t value = Be32(payload, at + 2);
        if (id == 0x4) {  // INITIAL_WINDOW_SIZE: adjusts every open stream
          for (auto& [s, w] : stream_window_) w += static_cast<int64_t>(value) - initial_window_;
          initial_window_ = value;
        }
        if (id == 0x5) max_frame_ = value;
      }
      WriteFrame(kSettings, kAck, 0, "");
      return;
    case kPing:
      if (!(flags & kAck)) WriteFrame(kPing, kAck, 0, payload);
      return;
    case kWindowUpdate: {
      if (payload.size() < 4) return;
      const int64_t inc = Be32(payload, 0) & 0x7fffffff;
      if (stream == 0) {
        conn_window_ += inc;
      } else {
        stream_window_[stream] += inc;
      }
      return;
    }
    case kRstStream:
      ended_[stream] = true;
      return;
    case kHeaders:
      if (flags & kEndStream) ended_[stream] = true;
      return;
    case kGoaway:
      return;  // the connection closes after it
    case kData:
      // Replenish what the server sent us, so it can go on (never much).
      if (!payload.empty()) {
        WriteFrame(kWindowUpdate, 0, 0, Be32Bytes(static_cast<uint32_t>(payload.size())));
        if (flags & kEndStream) ended_[stream] = true;
      }
      return;
    default:
      return;
  }
}

}  // namespace taskq::testing
