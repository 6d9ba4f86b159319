// Ctrl-C (SIGINT) and SIGTERM handling for the CLI.
//
// Signals are blocked in every thread (gRPC's included: call
// InstallInterruptHandling first thing in main, before any thread exists)
// and a dedicated thread waits for them with sigwait. That thread may do
// real work, unlike a signal handler: it runs the cleanup the current verb
// registered (e.g. submit --wait deleting its private results queue), then
// ends the process with 128 + the signal number (130 for Ctrl-C).
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <functional>

namespace taskq::cli {

void InstallInterruptHandling();

// Registers what to do on Ctrl-C before exiting (replaces any previous).
void SetInterruptCleanup(std::function<void()> cleanup);

// Unregisters the cleanup. If the cleanup is running, waits for it (and the
// process then exits from the signal thread): after this returns, the
// cleanup will not run.
void ClearInterruptCleanup();

}  // namespace taskq::cli
