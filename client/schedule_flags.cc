#include "client/schedule_flags.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/cli_common.h"
#include "common/limits.h"

namespace taskq::cli {

void AddScheduleFlags(CLI::App* app, ScheduleFlags* flags) {
  app->add_option("--delay", flags->delay_seconds,
                  "Hand the tasks out no earlier than SECONDS from now (fractions allowed; at "
                  "most 365 days)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS");
  app->add_option("--not-before", flags->not_before,
                  "Hand the tasks out no earlier than TIME: RFC 3339 (2025-01-31T08:00:00Z) or "
                  "Unix seconds. With --delay, the later of the two wins")
      ->type_name("TIME");
  app->add_option("--dedup-key", flags->dedup_key,
                  "Deduplicate: while a task with the same key on this queue is not finished, "
                  "a put stores nothing and returns that task's id. Every `{}` in KEY is "
                  "replaced by the payload; with several payloads KEY must contain `{}`")
      ->type_name("KEY");
}

absl::StatusOr<absl::Time> ParseTimeArg(absl::string_view text) {
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) {
    if (!std::isfinite(seconds) || std::fabs(seconds) > 1e12) {
      return absl::InvalidArgumentError(
          absl::StrCat("time \"", text, "\" is out of range (Unix seconds)"));
    }
    return absl::FromUnixMicros(static_cast<int64_t>(std::llround(seconds * 1e6)));
  }
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &error)) return t;
  return absl::InvalidArgumentError(absl::StrCat(
      "time \"", absl::CHexEscape(text),
      "\" is neither RFC 3339 (e.g. 2025-01-31T08:00:00Z) nor Unix seconds: ", error));
}

absl::StatusOr<std::string> ExpandDedupKey(absl::string_view pattern, absl::string_view payload) {
  std::string key = absl::StrReplaceAll(pattern, {{"{}", payload}});
  if (key.empty()) return absl::InvalidArgumentError("--dedup-key must not be empty");
  if (key.size() > kMaxDedupKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dedup key \"", absl::CHexEscape(key.substr(0, 40)), "...\" is ", key.size(),
        " bytes; at most ", kMaxDedupKeyBytes, " are allowed"));
  }
  return key;
}

absl::Status ApplyScheduleFlags(const ScheduleFlags& flags, absl::Time now,
                                std::vector<v1::TaskSpec>* tasks) {
  absl::Duration delay = absl::ZeroDuration();
  absl::Time not_before = absl::InfinitePast();
  if (flags.delay_seconds > 0) delay = SecondsToDuration(flags.delay_seconds);
  if (!flags.not_before.empty()) {
    auto t = ParseTimeArg(flags.not_before);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--not-before: ", t.status().message()));
    not_before = *t;
  }
  if (delay != absl::ZeroDuration() || not_before != absl::InfinitePast()) {
    for (v1::TaskSpec& task : *tasks) {
      if (auto s = SetTaskDelay(&task, delay, not_before, now); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(flags.delay_seconds > 0 ? "--delay: " : "--not-before: ", s.message()));
      }
    }
  }
  if (!flags.dedup_key.empty()) {
    if (tasks->size() > 1 && !absl::StrContains(flags.dedup_key, "{}")) {
      return absl::InvalidArgumentError(
          "with several payloads, --dedup-key must contain {} (replaced by each payload, e.g. "
          "--dedup-key 'job-{}') so that each task gets its own key");
    }
    for (size_t i = 0; i < tasks->size(); ++i) {
      auto key = ExpandDedupKey(flags.dedup_key, (*tasks)[i].payload());
      if (!key.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--dedup-key for payload #", i + 1, ": ", key.status().message()));
      }
      (*tasks)[i].set_dedup_key(*std::move(key));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> DedupKeys(const std::vector<v1::TaskSpec>& tasks) {
  std::vector<std::string> keys;
  keys.reserve(tasks.size());
  for (const v1::TaskSpec& t : tasks) keys.push_back(t.dedup_key());
  return keys;
}

void ReportExisting(const PutReceipt& receipt, const std::vector<std::string>& keys) {
  for (size_t i = 0; i < receipt.ids.size(); ++i) {
    // A task the user gave no key found "existing" is our own put sent
    // again after a lost reply (its retry key matched): stored once, fine.
    if (!receipt.existing[i] || i >= keys.size() || keys[i].empty()) continue;
    std::string line = absl::StrCat("taskq: task ", receipt.ids[i],
                                    " already exists with dedup key \"",
                                    absl::CHexEscape(i < keys.size() ? keys[i] : ""),
                                    "\": nothing stored\n");
    WriteText(stderr, line);
  }
}

}  // namespace taskq::cli
