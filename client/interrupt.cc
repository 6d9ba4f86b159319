#include "client/interrupt.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "common/sync.h"

namespace taskq::cli {
namespace {

// Leaked on purpose: the signal thread may use them while exit() runs
// static destructors on the main thread.
Mutex& CleanupMutex() {
  static Mutex* mu = new Mutex;
  return *mu;
}
std::function<void()>& CleanupFn() ABSL_EXCLUSIVE_LOCKS_REQUIRED(CleanupMutex()) {
  static auto* fn = new std::function<void()>;
  return *fn;
}

sigset_t InterruptSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Runs on the signal thread. The lock is held until _Exit on purpose (no
// second cleanup, and ClearInterruptCleanup blocks), which the analysis
// cannot express.
[[noreturn]] void WaitForSignal(sigset_t set) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  CleanupMutex().Lock();
  if (CleanupFn()) CleanupFn()();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(128 + sig);
}

}  // namespace

void InstallInterruptHandling() {
  sigset_t set = InterruptSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(WaitForSignal, set).detach();
}

void SetInterruptCleanup(std::function<void()> cleanup) {
  MutexLock lock(&CleanupMutex());
  CleanupFn() = std::move(cleanup);
}

void ClearInterruptCleanup() {
  MutexLock lock(&CleanupMutex());
  CleanupFn() = nullptr;
}

}  // namespace taskq::cli
