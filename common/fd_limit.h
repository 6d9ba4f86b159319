// The process's limit on open files: programs that hold many sockets (the
// master, tests that attack it) raise their soft limit to the hard one.
//
// Thread-safety: a process-wide setting; call before opening many files.
#pragma once

#include <cstdint>

namespace taskq {

// Raises the soft limit on open files to the hard limit; returns the soft
// limit now in effect.
uint64_t RaiseFdLimit();

}  // namespace taskq
