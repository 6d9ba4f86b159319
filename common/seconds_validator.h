// SecondsIn: a CLI11 check for a flag that takes a number of seconds in
// [lo, hi], whose refusal says what to give ("0.5" is not a number of
// seconds from 1 to 3600) where CLI::Range would print "not in range
// 1.000000 to ...". Shared by the master, worker and CLI command lines.
//
// Thread-safety: stateless.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace taskq {

inline CLI::Validator SecondsIn(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& value) -> std::string {
        double seconds = 0;
        if (absl::SimpleAtod(value, &seconds) && seconds >= lo && seconds <= hi) return "";
        return absl::StrFormat("\"%s\" is not a number of seconds from %g to %g", value, lo, hi);
      },
      absl::StrFormat("SECONDS in [%g, %g]", lo, hi));
}

}  // namespace taskq
