// taskq-echo-server: the raw gRPC floor for bench/compare.sh. Serves
// taskq.bench.Echo (bench/echo.proto) on an insecure port: Unary answers
// with its request, Stream writes back every message it reads. gRPC's
// synchronous server, default settings: what a plain gRPC service costs.
// Runs until SIGTERM or SIGINT.
//
// Thread-safety: a program; the handlers share no state.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "bench/bench_flags.h"
#include "common/port_file.h"
#include "echo.grpc.pb.h"

namespace taskq::bench {
namespace {

class EchoService final : public Echo::Service {
  grpc::Status Unary(grpc::ServerContext*, const EchoMessage* request,
                     EchoMessage* response) override {
    *response = *request;
    return grpc::Status::OK;
  }

  grpc::Status Stream(grpc::ServerContext*,
                      grpc::ServerReaderWriter<EchoMessage, EchoMessage>* stream) override {
    EchoMessage message;
    while (stream->Read(&message)) {
      if (!stream->Write(message)) break;
    }
    return grpc::Status::OK;
  }
};

int Main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  std::string port_file;
  CLI::App app{"Serves the echo service (bench/echo.proto) until SIGTERM.",
               "taskq-echo-server"};
  AddText(app, "--listen", &listen, "HOST:PORT to listen on (port 0: any free port)");
  AddText(app, "--port-file", &port_file,
          "write HOST:PORT here once listening (written whole, then renamed)");
  if (std::optional<int> exit = Parse(app, argc, argv)) return *exit;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before gRPC's threads

  EchoService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "taskq-echo-server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  // The listen address with the bound port ("[::1]:0" -> "[::1]:PORT").
  std::string address = listen.substr(0, listen.rfind(':') + 1) + std::to_string(port);
  if (!port_file.empty() && !WritePortFile(port_file, address)) {
    std::fprintf(stderr, "taskq-echo-server: cannot write port file %s\n", port_file.c_str());
    return 1;
  }
  std::fprintf(stderr, "taskq-echo-server: listening on %s\n", address.c_str());
  int signal = 0;
  sigwait(&signals, &signal);
  // Streams still open are cancelled after a second.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

}  // namespace
}  // namespace taskq::bench

int main(int argc, char** argv) { return taskq::bench::Main(argc, argv); }
