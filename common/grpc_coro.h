// Bridges between gRPC's callback API and the coroutine runtime.
//
// Server side — a unary RPC handler written as a coroutine:
//
//   grpc::ServerUnaryReactor* Service::Get(grpc::CallbackServerContext* ctx,
//                                          const GetRequest* req, GetResponse* resp) {
//     return rt::ServeUnary(ctx, [=, this](std::stop_token stop) -> rt::Task<grpc::Status> {
//       auto tasks = co_await AwaitGet(*engine_, args, stop, scheduler_);
//       ...
//       co_return grpc::Status::OK;
//     });
//   }
//
// The body starts at once on the gRPC thread that delivered the call and
// runs until its first real suspension; wherever it is resumed, it finishes
// the RPC with the status it returns. When the client cancels (or its
// deadline passes) the stop token fires, so the awaits inside wake with
// CANCELLED and the body winds down; the RPC is finished exactly once. An
// exception escaping the body becomes INTERNAL and is logged — never lost.
//
// Client side — an awaitable unary call on a stub's callback interface:
//
//   grpc::ClientContext ctx;  v1::GetRequest req;  v1::GetResponse resp;
//   grpc::Status s = co_await rt::CallUnary(
//       [&](auto done) { stub->async()->Get(&ctx, &req, &resp, std::move(done)); },
//       &ctx, stop);
//
// The coroutine is resumed on the executor it was running on when it
// awaited (or on gRPC's thread if it had none). A stop request cancels the
// call (ClientContext::TryCancel); the await then completes with gRPC's
// CANCELLED status once gRPC has let go of ctx/req/resp, so they may live in
// the coroutine frame.
//
// Client side — a bidi stream driven by coroutines (the worker's Work
// stream):
//
//   auto stream = rt::ClientStream<Req, Resp>::Open(
//       ctx, [&](auto* reactor) { stub->async()->Work(ctx, reactor); });
//   co_await stream->Write(req);          // false: the stream is broken
//   Resp resp; co_await stream->Read(&resp);  // false: no more messages
//   stream->WritesDone();  grpc::Status s = co_await stream->Finish();
//
// At most one Read and one Write may be outstanding at a time (one reader
// coroutine and one writer coroutine, as gRPC requires).
//
// Thread-safety: ServeUnary and CallUnary may be used from any thread; each
// call's state is touched by gRPC's threads and the coroutine in a
// hand-over fashion, synchronised by atomics.
#pragma once

#include <atomic>
#include <coroutine>
#include <exception>
#include <functional>
#include <optional>
#include <stop_token>
#include <utility>

#include <grpcpp/client_context.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "common/runtime/executor.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"

namespace taskq::rt {

namespace internal {

// The unary reactor a coroutine finishes. Freed when both gRPC (OnDone) and
// the coroutine (after Finish) are done with it.
class CoroUnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  void OnCancel() override { stop_.request_stop(); }
  void OnDone() override { Unref(); }

  std::stop_token token() const { return stop_.get_token(); }
  void FinishAndRelease(const grpc::Status& status) {
    Finish(status);
    Unref();
  }

 private:
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  std::stop_source stop_;
  std::atomic<int> refs_{2};  // OnDone + the coroutine
};

// Exceptions become INTERNAL so the RPC is always finished.
grpc::Status InternalErrorFromException(std::exception_ptr e);

// `Reactor` has token() (the call's stop token) and
// FinishAndRelease(status) (finishes the call, exactly once).
template <typename Reactor, typename Body>
Detached RunUnaryBody(Reactor* reactor, Body body) {
  grpc::Status status;
  try {
    status = co_await body(reactor->token());
  } catch (...) {
    status = InternalErrorFromException(std::current_exception());
  }
  reactor->FinishAndRelease(status);
}

}  // namespace internal

// Runs `body(stop_token) -> Task<grpc::Status>` as the handler of a unary
// call and returns the reactor gRPC expects. `body` is moved into the
// coroutine frame, so lambda captures stay alive until it finishes.
template <typename Body>
grpc::ServerUnaryReactor* ServeUnary(Body body) {
  auto* reactor = new internal::CoroUnaryReactor();
  internal::Detached run = internal::RunUnaryBody(reactor, std::move(body));
  run.handle.resume();  // runs until the body first suspends (or ends)
  return reactor;
}

// The same for a reactor the caller made (one with token() and
// FinishAndRelease(status), e.g. a call on the raw ByteBuffer API that
// serializes its response when it finishes).
template <typename Reactor, typename Body>
void ServeUnaryOn(Reactor* reactor, Body body) {
  internal::Detached run = internal::RunUnaryBody(reactor, std::move(body));
  run.handle.resume();
}

// Awaitable client unary call; see the header comment. `start` receives the
// completion callback to hand to the stub's async() method.
class CallUnary {
 public:
  using Start = std::function<void(std::function<void(grpc::Status)>)>;

  CallUnary(Start start, grpc::ClientContext* ctx, std::stop_token stop = {})
      : start_(std::move(start)), ctx_(ctx), stop_(std::move(stop)) {}

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    handle_ = h;
    executor_ = CurrentExecutor();
    if (stop_.stop_possible()) {
      on_stop_.emplace(stop_, [ctx = ctx_] { ctx->TryCancel(); });
    }
    start_([this](grpc::Status status) {
      status_ = std::move(status);
      if (phase_.exchange(kDone, std::memory_order_acq_rel) == kSuspended) {
        internal::ResumeOn(executor_, handle_);
      }
    });
    // Completed before we got here (possible on a failed start): go on now.
    return phase_.exchange(kSuspended, std::memory_order_acq_rel) != kDone;
  }

  grpc::Status await_resume() {
    on_stop_.reset();
    return std::move(status_);
  }

 private:
  enum Phase { kStarting, kSuspended, kDone };
  Start start_;
  grpc::ClientContext* ctx_;
  std::stop_token stop_;
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
  std::coroutine_handle<> handle_;
  Executor* executor_ = nullptr;
  grpc::Status status_;
  std::atomic<int> phase_{kStarting};
};

namespace internal {

// One suspended coroutine waiting for one gRPC reaction. Arm() is called
// from await_suspend after the operation was started; Fire() from the
// reaction. Whichever comes second resumes the coroutine (Arm by returning
// false from await_suspend, so it continues inline).
class OneShot {
 public:
  void Reset() { phase_.store(kIdle, std::memory_order_relaxed); }
  void Prepare(std::coroutine_handle<> h) {
    handle_ = h;
    executor_ = CurrentExecutor();
  }
  // Returns true if the coroutine stays suspended.
  bool Arm() { return phase_.exchange(kArmed, std::memory_order_acq_rel) != kFired; }
  void Fire() {
    if (phase_.exchange(kFired, std::memory_order_acq_rel) == kArmed) {
      ResumeOn(executor_, handle_);
    }
  }

 private:
  enum Phase { kIdle, kArmed, kFired };
  std::atomic<int> phase_{kIdle};
  std::coroutine_handle<> handle_;
  Executor* executor_ = nullptr;
};

}  // namespace internal

template <typename Req, typename Resp>
class ClientStream final : public grpc::ClientBidiReactor<Req, Resp> {
 public:
  // Opens the stream. `bind(reactor)` must call the stub's async() method
  // (e.g. stub->async()->Work(ctx, reactor)). `ctx` must outlive Finish().
  // The returned pointer keeps the stream alive; gRPC holds its own
  // reference until the call is done.
  static std::shared_ptr<ClientStream> Open(
      grpc::ClientContext* ctx, const std::function<void(grpc::ClientBidiReactor<Req, Resp>*)>& bind) {
    std::shared_ptr<ClientStream> stream(new ClientStream(ctx));
    stream->self_ = stream;  // released in OnDone
    bind(stream.get());
    // Held until Finish(): gRPC may not call OnDone (and we may keep
    // starting reads and writes) before the owner says it is done.
    stream->AddHold();
    stream->StartCall();
    return stream;
  }

  struct WriteAwaiter {
    ClientStream* s;
    const Req* msg;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      s->write_.Reset();
      s->write_.Prepare(h);
      s->StartWrite(msg);
      return s->write_.Arm();
    }
    bool await_resume() const { return s->write_ok_; }
  };
  // Sends `msg` (which must stay valid until the await completes).
  WriteAwaiter Write(const Req& msg) { return WriteAwaiter{this, &msg}; }

  struct ReadAwaiter {
    ClientStream* s;
    Resp* msg;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      s->read_.Reset();
      s->read_.Prepare(h);
      s->StartRead(msg);
      return s->read_.Arm();
    }
    bool await_resume() const { return s->read_ok_; }
  };
  ReadAwaiter Read(Resp* msg) { return ReadAwaiter{this, msg}; }

  // Half-closes the stream: no more writes.
  void WritesDone() { this->StartWritesDone(); }
  // Ends the call early; outstanding reads and writes complete with false.
  void Cancel() { ctx_->TryCancel(); }

  struct FinishAwaiter {
    ClientStream* s;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      s->done_.Reset();
      s->done_.Prepare(h);
      s->RemoveHold();
      return s->done_.Arm();
    }
    grpc::Status await_resume() const { return s->status_; }
  };
  // Waits for the call to end and returns its status. Call once, after the
  // last Read/Write completed (after WritesDone or Cancel).
  FinishAwaiter Finish() { return FinishAwaiter{this}; }

  void OnWriteDone(bool ok) override {
    write_ok_ = ok;
    write_.Fire();
  }
  void OnReadDone(bool ok) override {
    read_ok_ = ok;
    read_.Fire();
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    std::shared_ptr<ClientStream> keep = std::move(self_);
    done_.Fire();
  }

 private:
  explicit ClientStream(grpc::ClientContext* ctx) : ctx_(ctx) {}

  grpc::ClientContext* const ctx_;
  std::shared_ptr<ClientStream> self_;
  internal::OneShot write_, read_, done_;
  bool write_ok_ = false;  // written by the reaction before Fire
  bool read_ok_ = false;
  grpc::Status status_;
};

}  // namespace taskq::rt
