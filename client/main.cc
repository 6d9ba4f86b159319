// taskq: the command-line client of the taskq master. Everything lives in
// client/ (cli.cc and one file per group of verbs); see docs/CLI.md.
#include "client/cli.h"

int main(int argc, char** argv) { return taskq::cli::Main(argc, argv); }
