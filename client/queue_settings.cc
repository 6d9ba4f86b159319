#include "client/queue_settings.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "client/cli_common.h"
#include "common/limits.h"

namespace taskq::cli {
namespace {

bool Given(const CLI::Option* option) { return option != nullptr && option->count() > 0; }

// --idle-ttl in ms; longer than SecondsToMs allows (up to 365 days).
absl::StatusOr<uint64_t> IdleTtlMs(double seconds) {
  const double ms = std::ceil(seconds * 1000);
  if (!(ms >= 0) || ms > static_cast<double>(kMaxIdleTtlMs)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--idle-ttl ", seconds, " is out of range (0 = never, up to ", kMaxIdleTtlMs / 1000,
        " seconds: 365 days)"));
  }
  return static_cast<uint64_t>(ms);
}

}  // namespace

void AddQueueSettingsFlags(CLI::App* app, QueueSettingsFlags* f, bool for_update) {
  auto deflt = [&](const char* what) {
    return for_update ? std::string() : absl::StrCat(" (default: ", what, ")");
  };
  f->maxsize_option =
      app->add_option("--maxsize", f->maxsize,
                      "Most tasks the queue holds (ready + delayed + leased); a put on a full "
                      "queue waits. 0 = unbounded" +
                          deflt("0"));
  f->lease_option = app->add_option("--lease", f->lease_seconds,
                                    "Seconds a worker may hold a task before it is handed out "
                                    "again" +
                                        deflt("the master's --default-lease"))
                        ->check(CLI::PositiveNumber)
                        ->type_name("SECONDS");
  f->max_attempts_option =
      app->add_option("--max-attempts", f->max_attempts,
                      "Deliveries before a task is given up: it goes to the dead-letter set and "
                      "a FAILED result to its reply-to queue" +
                          deflt("the master's --max-attempts"))
          ->check(CLI::Range(1u, 1000u));
  f->backoff_option =
      app->add_option("--backoff", f->backoff_seconds,
                      "Retry backoff: after failed or expired attempt n the task waits "
                      "min(SECONDS * 2^(n-1), --backoff-max), with jitter (50-100%), before it is "
                      "ready again; 0.001 retries at once" +
                          deflt("1"))
          ->check(CLI::PositiveNumber)
          ->type_name("SECONDS");
  f->backoff_max_option =
      app->add_option("--backoff-max", f->backoff_max_seconds,
                      "Longest retry backoff" + deflt("60"))
          ->check(CLI::PositiveNumber)
          ->type_name("SECONDS");
  f->dead_letter_option =
      app->add_option("--dead-letter", f->dead_letter,
                      "Queue whose dead-letter set receives this queue's given-up tasks "
                      "(see `taskq dlq`); '' = the queue's own" +
                          deflt("the queue's own"))
          ->type_name("QUEUE");
  f->idle_ttl_option =
      app->add_option("--idle-ttl", f->idle_ttl_seconds,
                      "Delete the queue, with what it holds, once nobody has read from or put on "
                      "it for SECONDS and nothing holds it (a waiting call, a worker, a leased or "
                      "delayed task, a result still owed to it); 0 = never" +
                          deflt("never; _results.* queues: the master's --results-ttl"))
          ->check(CLI::NonNegativeNumber)
          ->type_name("SECONDS");
}

absl::Status FillConfig(const QueueSettingsFlags& f, v1::QueueConfig* config) {
  if (Given(f.maxsize_option)) config->set_maxsize(f.maxsize);
  if (Given(f.lease_option)) {
    auto ms = SecondsToMs(f.lease_seconds, "--lease");
    if (!ms.ok()) return ms.status();
    config->set_lease_ms(*ms);
  }
  if (Given(f.max_attempts_option)) config->set_max_attempts(f.max_attempts);
  if (Given(f.backoff_option)) {
    auto ms = SecondsToMs(f.backoff_seconds, "--backoff");
    if (!ms.ok()) return ms.status();
    config->set_backoff_ms(*ms);
  }
  if (Given(f.backoff_max_option)) {
    auto ms = SecondsToMs(f.backoff_max_seconds, "--backoff-max");
    if (!ms.ok()) return ms.status();
    config->set_backoff_max_ms(*ms);
  }
  if (Given(f.dead_letter_option)) config->set_dead_letter(f.dead_letter);
  if (Given(f.idle_ttl_option)) {
    auto ms = IdleTtlMs(f.idle_ttl_seconds);
    if (!ms.ok()) return ms.status();
    config->set_idle_ttl_ms(*ms);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::QueueConfigUpdate> ToUpdate(const QueueSettingsFlags& f) {
  v1::QueueConfig config;
  if (auto s = FillConfig(f, &config); !s.ok()) return s;
  v1::QueueConfigUpdate update;
  if (Given(f.maxsize_option)) update.set_maxsize(config.maxsize());
  if (Given(f.lease_option)) update.set_lease_ms(config.lease_ms());
  if (Given(f.max_attempts_option)) update.set_max_attempts(config.max_attempts());
  if (Given(f.backoff_option)) update.set_backoff_ms(config.backoff_ms());
  if (Given(f.backoff_max_option)) update.set_backoff_max_ms(config.backoff_max_ms());
  if (Given(f.dead_letter_option)) update.set_dead_letter(config.dead_letter());
  if (Given(f.idle_ttl_option)) update.set_idle_ttl_ms(config.idle_ttl_ms());
  if (update.ByteSizeLong() == 0) {
    return absl::InvalidArgumentError(
        "nothing to change: give at least one of --maxsize, --lease, --max-attempts, "
        "--backoff, --backoff-max, --dead-letter, --idle-ttl");
  }
  return update;
}

}  // namespace taskq::cli
