// The `taskq` command line: builds the CLI11 app from the verb files,
// parses, and runs the chosen verb. See docs/CLI.md.
// Thread-safety: call once, from main.
#pragma once

namespace taskq::cli {

// Returns the process exit code (client/exit_codes.h).
int Main(int argc, char** argv);

}  // namespace taskq::cli
