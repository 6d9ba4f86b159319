#include "master/http_server.h"

#include <netdb.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/channel.h"
#include "common/log.h"
#include "master/listener.h"
#include "master/refusals.h"

namespace taskq {
namespace {

constexpr size_t kMaxWaitingConnections = 64;
constexpr size_t kMaxRequestBody = 1024;
constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// cpp-httplib's ThreadPool queues accepted connections without a bound;
// this one makes the accept loop wait instead once `max_waiting` are
// queued, so a flood of connections waits in the kernel's backlog rather
// than in our memory (each queued job holds an open socket).
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, size_t max_waiting) : max_waiting_(max_waiting) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~BoundedPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    room_.wait(lock, [this] { return jobs_.size() < max_waiting_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    work_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    work_.notify_all();
    room_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down, nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        room_.notify_one();
      }
      fn();  // cpp-httplib's handlers catch what our code throws
    }
  }

  const size_t max_waiting_;
  // std::mutex, not taskq::Mutex: the condition variables wait on it.
  std::mutex mu_;
  std::condition_variable work_, room_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

struct HostPort {
  std::string host;
  int port = 0;
};

absl::StatusOr<HostPort> SplitListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  HostPort hp;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --http-listen \"", listen, "\": want HOST:PORT (e.g. 127.0.0.1:9464)"));
  }
  hp.host = listen.substr(0, colon);
  if (absl::StartsWith(hp.host, "[") && absl::EndsWith(hp.host, "]")) {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  return hp;
}

// Whether every address `host` resolves to is a loopback one.
absl::StatusOr<bool> LoopbackOnly(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resolve --http-listen host \"", host, "\": ", gai_strerror(rc)));
  }
  bool loopback = true;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    loopback = loopback && IsLoopbackAddress(ai->ai_addr);
  }
  ::freeaddrinfo(found);
  return loopback;
}

void Refuse(httplib::Response& res, Refusal kind, const std::string& peer, std::string body) {
  Refusals().Refuse(kind, peer, "GET /metrics");  // never the token
  res.status = 401;
  res.set_header("WWW-Authenticate", "Bearer realm=\"taskq\"");
  res.set_content(std::move(body), "text/plain; charset=utf-8");
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    HttpServerOptions options, std::function<std::string()> render) {
  auto hp = SplitListen(options.listen);
  if (!hp.ok()) return hp.status();
  auto loopback = LoopbackOnly(hp->host);
  if (!loopback.ok()) return loopback.status();
  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer());
  self->token_required_ = !*loopback;
  if (!*loopback) {
    if (options.tls != nullptr) {
      auto ssl = std::make_unique<httplib::SSLServer>(options.tls->cert.c_str(),
                                                      options.tls->key.c_str());
      if (!ssl->is_valid()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--http-listen ", options.listen, ": cannot serve HTTPS with certificate ",
            options.tls->cert, " and key ", options.tls->key));
      }
      self->server_ = std::move(ssl);
      self->https_ = true;
    } else if (!options.insecure) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to serve /metrics over plain HTTP on non-loopback address ", options.listen,
          ": the bearer token would cross the network in the clear. Set up TLS (`taskq-master "
          "init`, or --tls-cert and --tls-key) to serve HTTPS, use a loopback address, or "
          "--insecure if the network is trusted"));
    }
  }
  if (!self->server_) self->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *self->server_;

  const int threads = std::max(1, options.threads);
  server.new_task_queue = [threads] { return new BoundedPool(threads, kMaxWaitingConnections); };
  const auto timeout = absl::ToChronoMicroseconds(options.timeout);
  server.set_read_timeout(timeout);
  server.set_write_timeout(timeout);
  server.set_keep_alive_timeout(5);
  server.set_keep_alive_max_count(5);
  server.set_payload_max_length(kMaxRequestBody);

  const CredentialTable* credentials = options.credentials;
  const bool token_required = self->token_required_;
  // Before routing: a client without a valid token learns nothing, not
  // even which paths exist.
  server.set_pre_routing_handler([credentials, token_required](const httplib::Request& req,
                                                               httplib::Response& res) {
    if (!token_required) return httplib::Server::HandlerResponse::Unhandled;
    const std::string peer = absl::StrCat(req.remote_addr, ":", req.remote_port);
    const std::string header = req.get_header_value("Authorization");
    absl::string_view token(header);
    if (!absl::ConsumePrefix(&token, "Bearer ") || token.empty()) {
      Refuse(res, Refusal::kNoToken, peer,
             "401 unauthorized: send `Authorization: Bearer <token>` with a taskq credential's "
             "token (any role; `taskq credential create NAME --role reader`)\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (credentials == nullptr) {
      Refuse(res, Refusal::kWrongToken, peer, "401 unauthorized: no credentials configured\n");
      return httplib::Server::HandlerResponse::Handled;
    }
    auto who = credentials->AuthenticateToken(token);
    if (!who.ok()) {
      Refuse(res, Refusal::kWrongToken, peer,
             absl::StrCat("401 unauthorized: ", who.status().message(),
                          " (send a valid taskq credential's token as `Authorization: Bearer "
                          "<token>`)\n"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), kContentType);
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 401 || !res.body.empty()) return;
    res.set_content(res.status == 404 ? "404 not found: only GET /metrics is served here\n"
                                      : absl::StrCat(res.status, "\n"),
                    "text/plain; charset=utf-8");
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content("500 internal error\n", "text/plain; charset=utf-8");
      });

  const int port = hp->port == 0 ? server.bind_to_any_port(hp->host)
                                 : (server.bind_to_port(hp->host, hp->port) ? hp->port : -1);
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --http-listen ", options.listen,
                                               " (address in use, or not this host's)"));
  }
  self->address_ = JoinHostPort(hp->host, port);
  self->thread_ = std::thread([s = self->server_.get()] { s->listen_after_bind(); });
  // stop() does nothing before the accept loop runs: wait for it, so that a
  // Stop right after Start cannot leave the thread serving forever.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  return self;
}

void MetricsHttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

}  // namespace taskq
