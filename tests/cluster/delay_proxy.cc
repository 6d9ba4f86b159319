// taskq-delay-proxy: a TCP proxy that stands in for distance in the
// multi-host tests (tc netem is not available everywhere).
//
//   taskq-delay-proxy --listen IP:PORT --connect IP:PORT --delay-ms N
//                     [--port-file PATH] [--max-buffer-kb K]
//
// Every connection accepted on --listen gets its own connection to
// --connect. Each byte is passed on N ms after it was read, in each
// direction (a round trip through the proxy gains 2 N ms), in order. An
// end of stream (FIN) is passed on N ms late too; a reset on one side
// resets the other at once. At most K KiB (default 4096) wait in each
// direction: beyond that the proxy stops reading from the sender, so TCP's
// flow control holds it back. What it does not model: the TCP handshake
// itself is not delayed (the proxy's kernel answers it), and there is no
// bandwidth limit or loss (the tests add loss with nftables).
//
// Single-threaded epoll loop; IPv4 only. Exits on SIGTERM/SIGINT.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>

namespace {

int64_t NowUs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "taskq-delay-proxy: %s\n", what.c_str());
  std::exit(2);
}

bool ParseAddress(const std::string& text, sockaddr_in* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  *out = {};
  out->sin_family = AF_INET;
  char* end = nullptr;
  long port = std::strtol(text.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) return false;
  out->sin_port = htons(static_cast<uint16_t>(port));
  return ::inet_pton(AF_INET, text.substr(0, colon).c_str(), &out->sin_addr) == 1;
}

// Bytes (or the end of the stream) read from one side, due on the other.
struct Chunk {
  int64_t due_us;
  std::string data;  // empty = end of stream
  size_t sent = 0;
};

// One direction of a proxied connection: read from `from`, write to `to`.
struct Direction {
  int from = -1;
  int to = -1;
  std::deque<Chunk> queue;
  size_t queued = 0;       // bytes waiting
  bool read_done = false;  // end of stream read from `from`
  bool write_done = false; // end of stream passed on to `to`
  bool blocked = false;    // `to` said EAGAIN: wait for EPOLLOUT
};

struct Pair {
  int client = -1;
  int upstream = -1;
  uint32_t client_events = 0;    // what epoll watches now (0 = not registered)
  uint32_t upstream_events = 0;
  bool connected = false;  // upstream connect finished
  Direction up;            // client -> upstream
  Direction down;          // upstream -> client
};

class Proxy {
 public:
  Proxy(sockaddr_in target, int64_t delay_us, size_t max_buffer)
      : target_(target), delay_us_(delay_us), max_buffer_(max_buffer) {}

  void Listen(const sockaddr_in& listen_at, const std::string& port_file) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener_, reinterpret_cast<const sockaddr*>(&listen_at), sizeof listen_at) != 0 ||
        ::listen(listener_, 512) != 0) {
      Die(std::string("cannot listen: ") + std::strerror(errno));
    }
    sockaddr_in bound;
    socklen_t len = sizeof bound;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&bound), &len);
    char ip[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof ip);
    const std::string address = std::string(ip) + ":" + std::to_string(ntohs(bound.sin_port));
    std::printf("taskq-delay-proxy listening on %s\n", address.c_str());
    std::fflush(stdout);
    if (!port_file.empty()) {
      const std::string tmp = port_file + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (f == nullptr || std::fprintf(f, "%s\n", address.c_str()) < 0 || std::fclose(f) != 0 ||
          std::rename(tmp.c_str(), port_file.c_str()) != 0) {
        Die("cannot write " + port_file);
      }
    }
    Watch(listener_, EPOLL_CTL_ADD, EPOLLIN, kListenerKey);
  }

  void Run() {
    epoll_event events[64];
    for (;;) {
      int n = ::epoll_wait(epoll_, events, 64, NextTimeoutMs());
      if (n < 0 && errno != EINTR) Die(std::string("epoll_wait: ") + std::strerror(errno));
      for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        if (key == kListenerKey) {
          Accept();
          continue;
        }
        auto it = pairs_.find(key >> 1);
        if (it == pairs_.end()) continue;
        Pair& p = *it->second;
        const bool is_upstream = (key & 1) != 0;
        if (is_upstream && !p.connected && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(p.upstream, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            Close(it->first, /*reset=*/true);
            continue;
          }
          p.connected = true;
        }
        if (events[i].events & EPOLLOUT) (is_upstream ? p.up : p.down).blocked = false;
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
          if (!Read(is_upstream ? p.down : p.up)) {
            Close(it->first, /*reset=*/true);
            continue;
          }
        }
      }
      FlushAll();
    }
  }

 private:
  static constexpr uint64_t kListenerKey = ~uint64_t{0};

  void Watch(int fd, int op, uint32_t events, uint64_t key) {
    epoll_event ev = {};
    ev.events = events;
    ev.data.u64 = key;
    ::epoll_ctl(epoll_, op, fd, &ev);
  }

  // Registers, changes or removes `fd` in epoll. An fd we want nothing from
  // is removed: epoll reports a hang-up even with an empty mask, which
  // would spin the loop while the other direction's last bytes wait.
  void SetInterest(int fd, uint32_t* current, uint32_t wanted, uint64_t key) {
    if (wanted == *current) return;
    if (wanted == 0) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    else Watch(fd, *current == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, wanted, key);
    *current = wanted;
  }

  void Accept() {
    for (;;) {
      int client = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (client < 0) return;  // EAGAIN, or a transient error: wait for the next event
      int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(upstream, reinterpret_cast<const sockaddr*>(&target_), sizeof target_) != 0 &&
          errno != EINPROGRESS) {
        Reset(client);
        ::close(upstream);
        continue;
      }
      auto p = std::make_unique<Pair>();
      p->client = client;
      p->upstream = upstream;
      p->up.from = client;
      p->up.to = upstream;
      p->down.from = upstream;
      p->down.to = client;
      const uint64_t id = next_id_++;
      SetInterest(client, &p->client_events, EPOLLIN, id << 1);
      SetInterest(upstream, &p->upstream_events, EPOLLIN | EPOLLOUT, (id << 1) | 1);
      pairs_[id] = std::move(p);
    }
  }

  // Reads what `d.from` has (up to the buffer bound). False on a reset.
  bool Read(Direction& d) {
    char buf[65536];
    while (!d.read_done && d.queued < max_buffer_) {
      ssize_t n = ::recv(d.from, buf, sizeof buf, 0);
      if (n > 0) {
        d.queue.push_back({NowUs() + delay_us_, std::string(buf, static_cast<size_t>(n))});
        d.queued += static_cast<size_t>(n);
      } else if (n == 0) {
        d.queue.push_back({NowUs() + delay_us_, std::string()});
        d.read_done = true;
      } else if (errno == EINTR) {
        continue;
      } else {
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
    }
    return true;
  }

  // Writes what is due. False on a reset of the receiver.
  bool Flush(Pair& p, Direction& d, int64_t now) {
    if (!p.connected) return true;
    while (!d.blocked && !d.queue.empty() && d.queue.front().due_us <= now) {
      Chunk& c = d.queue.front();
      if (c.data.empty()) {
        ::shutdown(d.to, SHUT_WR);
        d.write_done = true;
        d.queue.pop_front();
        continue;
      }
      ssize_t n = ::send(d.to, c.data.data() + c.sent, c.data.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          d.blocked = true;
          break;
        }
        return false;
      }
      c.sent += static_cast<size_t>(n);
      d.queued -= static_cast<size_t>(n);
      if (c.sent == c.data.size()) d.queue.pop_front();
    }
    return true;
  }

  uint32_t InterestOf(const Direction& reading, const Direction& writing, bool connecting) {
    uint32_t ev = 0;
    if (!reading.read_done && reading.queued < max_buffer_) ev |= EPOLLIN;
    if (writing.blocked || connecting) ev |= EPOLLOUT;
    return ev;
  }

  void FlushAll() {
    const int64_t now = NowUs();
    for (auto it = pairs_.begin(); it != pairs_.end();) {
      Pair& p = *it->second;
      const uint64_t id = it->first;
      ++it;  // Close erases the current entry
      if (!Flush(p, p.up, now) || !Flush(p, p.down, now)) {
        Close(id, /*reset=*/true);
        continue;
      }
      if (p.up.write_done && p.down.write_done) {
        Close(id, /*reset=*/false);
        continue;
      }
      // A direction that drained below the bound is read again.
      SetInterest(p.client, &p.client_events, InterestOf(p.up, p.down, false), id << 1);
      SetInterest(p.upstream, &p.upstream_events, InterestOf(p.down, p.up, !p.connected),
                  (id << 1) | 1);
    }
  }

  int NextTimeoutMs() {
    int64_t next = -1;
    for (auto& [id, p] : pairs_) {
      for (const Direction* d : {&p->up, &p->down}) {
        if (d->blocked || d->queue.empty()) continue;
        if (next < 0 || d->queue.front().due_us < next) next = d->queue.front().due_us;
      }
    }
    if (next < 0) return -1;
    const int64_t wait_us = next - NowUs();
    return wait_us <= 0 ? 0 : static_cast<int>((wait_us + 999) / 1000);
  }

  static void Reset(int fd) {
    linger l = {1, 0};  // close with RST, as the peer did
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
  }

  void Close(uint64_t id, bool reset) {
    auto it = pairs_.find(id);
    if (it == pairs_.end()) return;
    for (int fd : {it->second->client, it->second->upstream}) {
      ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);  // ENOENT if not watched: fine
      if (reset) Reset(fd);
      else ::close(fd);
    }
    pairs_.erase(it);
  }

  const sockaddr_in target_;
  const int64_t delay_us_;
  const size_t max_buffer_;
  int epoll_ = -1;
  int listener_ = -1;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Pair>> pairs_;
};

void Usage() {
  std::fprintf(stderr,
               "usage: taskq-delay-proxy --listen IP:PORT --connect IP:PORT --delay-ms N\n"
               "                         [--port-file PATH] [--max-buffer-kb K]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen, connect, port_file;
  long delay_ms = -1, max_buffer_kb = 4096;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage();
    const std::string value = argv[++i];
    if (flag == "--listen") listen = value;
    else if (flag == "--connect") connect = value;
    else if (flag == "--port-file") port_file = value;
    else if (flag == "--delay-ms") delay_ms = std::strtol(value.c_str(), nullptr, 10);
    else if (flag == "--max-buffer-kb") max_buffer_kb = std::strtol(value.c_str(), nullptr, 10);
    else Usage();
  }
  sockaddr_in listen_at, target;
  if (!ParseAddress(listen, &listen_at)) Die("--listen needs IP:PORT");
  if (!ParseAddress(connect, &target)) Die("--connect needs IP:PORT");
  if (delay_ms < 0 || delay_ms > 60000) Die("--delay-ms needs 0..60000");
  if (max_buffer_kb < 64 || max_buffer_kb > 1 << 20) Die("--max-buffer-kb needs 64..1048576");
  Proxy proxy(target, delay_ms * 1000, static_cast<size_t>(max_buffer_kb) * 1024);
  proxy.Listen(listen_at, port_file);
  proxy.Run();
}
