// The per-queue settings flags `taskq queue create` and `taskq queue
// update` share (--maxsize, --lease, --max-attempts, --backoff,
// --backoff-max, --dead-letter, --idle-ttl), and their conversion into a QueueConfig
// (create) or a QueueConfigUpdate holding only the flags given (update).
//
// Thread-safety: used from main's thread only.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

struct QueueSettingsFlags {
  uint64_t maxsize = 0;
  double lease_seconds = 0;
  uint32_t max_attempts = 0;
  double backoff_seconds = 0;
  double backoff_max_seconds = 0;
  std::string dead_letter;
  double idle_ttl_seconds = 0;
  // The options, to tell "given" from "left at the default".
  CLI::Option* maxsize_option = nullptr;
  CLI::Option* lease_option = nullptr;
  CLI::Option* max_attempts_option = nullptr;
  CLI::Option* backoff_option = nullptr;
  CLI::Option* backoff_max_option = nullptr;
  CLI::Option* dead_letter_option = nullptr;
  CLI::Option* idle_ttl_option = nullptr;
};

// Adds the flags to `app`. `for_update` words the help for `queue update`.
void AddQueueSettingsFlags(CLI::App* app, QueueSettingsFlags* flags, bool for_update);

// Sets the given flags on `config` (name and kind are the caller's).
absl::Status FillConfig(const QueueSettingsFlags& flags, v1::QueueConfig* config);

// Only the flags given; INVALID_ARGUMENT if none was.
absl::StatusOr<v1::QueueConfigUpdate> ToUpdate(const QueueSettingsFlags& flags);

}  // namespace taskq::cli
