#include "common/http_listener.h"

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
#include "common/loopback.h"
#include "common/tls_reloader.h"

namespace taskq {
namespace {

constexpr size_t kMaxWaitingConnections = 64;

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

absl::StatusOr<HostPort> SplitListen(const std::string& listen, const std::string& flag) {
  const size_t colon = listen.rfind(':');
  HostPort hp;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad ", flag, " \"", listen, "\": want HOST:PORT (e.g. 127.0.0.1:9464)"));
  }
  hp.host = listen.substr(0, colon);
  if (absl::StartsWith(hp.host, "[") && absl::EndsWith(hp.host, "]")) {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  return hp;
}

void Unauthorized(httplib::Response& res, std::string body) {
  res.status = 401;
  res.set_header("WWW-Authenticate", "Bearer realm=\"taskq\"");
  res.set_content(std::move(body), "text/plain; charset=utf-8");
}

}  // namespace

std::optional<std::string> HttpListener::BearerToken(const httplib::Request& req) {
  const std::string header = req.get_header_value("Authorization");
  absl::string_view token(header);
  if (!absl::ConsumePrefix(&token, "Bearer ") || token.empty()) return std::nullopt;
  return std::string(token);
}

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Create(HttpListenerOptions options) {
  auto hp = SplitListen(options.listen, options.flag);
  if (!hp.ok()) return hp.status();
  auto loopback = ResolvesToLoopbackOnly(hp->host, options.flag);
  if (!loopback.ok()) return loopback.status();
  std::unique_ptr<HttpListener> self(new HttpListener());
  self->host_ = hp->host;
  self->port_ = hp->port;
  self->token_required_ = !*loopback;
  if (!*loopback) {
    if (!options.tls_cert.empty() || !options.tls_key.empty()) {
      auto ssl = std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(),
                                                      options.tls_key.c_str());
      if (!ssl->is_valid()) {
        return absl::FailedPreconditionError(absl::StrCat(
            options.flag, " ", options.listen, ": cannot serve HTTPS with certificate ",
            options.tls_cert, " and key ", options.tls_key));
      }
      // Serves the files on disk now: a rotated certificate without a restart.
      auto reloader = CertificateReloader::Install(ssl->ssl_context(), options.tls_cert,
                                                   options.tls_key);
      if (!reloader.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(options.flag, " ", options.listen,
                                                          ": ", reloader.status().message()));
      }
      self->reloader_ = *std::move(reloader);
      self->server_ = std::move(ssl);
      self->https_ = true;
    } else if (!options.insecure) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to serve ", options.what, " over plain HTTP on non-loopback address ",
          options.listen, ": the bearer token would cross the network in the clear. ",
          options.tls_hint, " to serve HTTPS, use a loopback address, or ", options.insecure_flag,
          " if the network is trusted"));
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
  server.set_payload_max_length(options.max_body);

  // Before routing: a client without a valid token learns nothing, not
  // even which paths exist.
  server.set_pre_routing_handler([o = options, token_required = self->token_required_](
                                     const httplib::Request& req, httplib::Response& res) {
    if (!token_required || (o.is_public && o.is_public(req.path))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string peer = absl::StrCat(req.remote_addr, ":", req.remote_port);
    const std::string request = absl::StrCat(req.method, " ", req.path);
    auto token = BearerToken(req);
    if (!token) {
      if (o.on_refused) o.on_refused(true, peer, request);
      Unauthorized(res, absl::StrCat("401 unauthorized: send `Authorization: Bearer <token>` ",
                                     o.token_hint, "\n"));
      return httplib::Server::HandlerResponse::Handled;
    }
    const absl::Status who = o.authenticate ? o.authenticate(*token)
                                            : absl::UnauthenticatedError("no tokens configured");
    if (!who.ok()) {
      if (o.on_refused) o.on_refused(false, peer, request);
      Unauthorized(res, absl::StrCat("401 unauthorized: ", who.message(),
                                     " (send a valid token as `Authorization: Bearer <token>`)\n"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 401 || !res.body.empty()) return;
    res.set_content(res.status == 404 ? "404 not found\n" : absl::StrCat(res.status, "\n"),
                    "text/plain; charset=utf-8");
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content("500 internal error\n", "text/plain; charset=utf-8");
      });
  self->options_ = std::move(options);
  return self;
}

absl::Status HttpListener::Start() {
  httplib::Server& server = *server_;
  const int port = port_ == 0 ? server.bind_to_any_port(host_)
                              : (server.bind_to_port(host_, port_) ? port_ : -1);
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.flag, " ",
                                               options_.listen,
                                               " (address in use, or not this host's)"));
  }
  address_ = JoinHostPort(host_, port);
  thread_ = std::thread([s = server_.get()] { s->listen_after_bind(); });
  // stop() does nothing before the accept loop runs: wait for it, so that a
  // Stop right after Start cannot leave the thread serving forever.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  return absl::OkStatus();
}

void HttpListener::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpListener::~HttpListener() { Stop(); }

}  // namespace taskq
