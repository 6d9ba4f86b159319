#include "client/task_format.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/cli_common.h"
#include "client/json_writer.h"

namespace taskq::cli {

std::string StateName(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_DELAYED:
      return "delayed";
    case v1::TASK_STATE_READY:
      return "ready";
    case v1::TASK_STATE_LEASED:
      return "leased";
    case v1::TASK_STATE_DONE:
      return "done";
    case v1::TASK_STATE_DEAD:
      return "dead";
    case v1::TASK_STATE_CANCELLED:
      return "cancelled";
    case v1::TASK_STATE_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

std::string FormatUnixMs(int64_t unix_ms) {
  if (unix_ms == 0) return "";
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

std::string OneLine(absl::string_view text, size_t max_chars) {
  std::string out(absl::StripTrailingAsciiWhitespace(text));
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (out.size() > max_chars) {
    out.resize(max_chars);
    out += "...";
  }
  return out;
}

namespace {

bool IsTerminalControl(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string EscapeForTerminal(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t c = static_cast<uint8_t>(text[i]);
    if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f)) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
      ++i;
      continue;
    }
    if (c == 0x7f) {
      out += "\\u007f";
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t len = DecodeUtf8(text.substr(i), &cp);
    if (len == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
      ++i;
    } else if (IsTerminalControl(cp)) {
      absl::StrAppendFormat(&out, "\\u%04x", cp);
      i += len;
    } else {
      out.append(text.data() + i, len);
      i += len;
    }
  }
  return out;
}

std::string ShowPayload(absl::string_view payload, size_t max_chars) {
  std::string shown = absl::CHexEscape(payload.substr(0, max_chars));
  return absl::StrCat("\"", shown, payload.size() > max_chars ? "\"..." : "\"");
}

std::vector<std::string> TaskStatusLines(const v1::Task& t) {
  const std::pair<const char*, std::string> fields[] = {
      {"id", absl::StrCat(t.id())},
      {"queue", t.queue()},
      {"state", StateName(t.state())},
      {"handler", t.handler()},
      {"priority", absl::StrCat(t.priority())},
      {"attempts", absl::StrCat(t.attempt())},
      {"worker", t.worker()},
      {"last_error", OneLine(t.last_error(), 4096)},
      {"reply_to", t.reply_to()},
      {"enqueued", FormatUnixMs(t.enqueued_unix_ms())},
      {"not_before", FormatUnixMs(t.not_before_unix_ms())},
      {"dedup_key", t.dedup_key().empty() ? "" : ShowPayload(t.dedup_key())},
      {"origin_queue", t.origin_queue()},
      // Finished tasks are remembered without their payload.
      {"payload", t.payload().empty() ? "" : ShowPayload(t.payload())},
  };
  std::vector<std::string> lines;
  for (const auto& [key, value] : fields) {
    lines.push_back(value.empty() ? absl::StrCat(key, ":") : absl::StrCat(key, ": ", value));
  }
  lines.push_back(absl::StrCat("history:", t.history().empty() ? " none" : ""));
  for (const v1::Attempt& a : t.history()) {
    std::string line = absl::StrCat("  ", a.attempt(), "  ", FormatUnixMs(a.ended_unix_ms()),
                                    "  ", a.worker().empty() ? "-" : a.worker(), "  ", a.how());
    if (!a.error().empty()) absl::StrAppend(&line, "  ", OneLine(a.error(), 1024));
    lines.push_back(std::move(line));
  }
  return lines;
}

QueueSizes SizesOf(const v1::QueueStats& s) {
  QueueSizes sizes;
  sizes.qsize = s.ready() + s.delayed();
  sizes.empty = sizes.qsize == 0;
  const uint64_t held = s.ready() + s.delayed() + s.leased();
  sizes.full = s.config().maxsize() > 0 && held >= s.config().maxsize();
  return sizes;
}

std::vector<std::pair<std::string, std::string>> ConfigFields(const v1::QueueConfig& c) {
  return {
      {"name", c.name()},
      {"kind", KindName(c.kind())},
      {"maxsize", absl::StrCat(c.maxsize())},
      {"lease_ms", absl::StrCat(c.lease_ms())},
      {"max_attempts", absl::StrCat(c.max_attempts())},
      {"backoff_ms", absl::StrCat(c.backoff_ms())},
      {"backoff_max_ms", absl::StrCat(c.backoff_max_ms())},
      // Empty = the queue keeps its own dead letters.
      {"dead_letter", c.dead_letter().empty() ? c.name() : c.dead_letter()},
      {"idle_ttl_ms", absl::StrCat(c.idle_ttl_ms())},  // 0 = never expires
  };
}

std::vector<std::pair<std::string, std::string>> StatsFields(const v1::QueueStats& s) {
  auto fields = ConfigFields(s.config());
  const QueueSizes sizes = SizesOf(s);
  auto yes_no = [](bool b) { return std::string(b ? "true" : "false"); };
  const std::pair<std::string, std::string> counters[] = {
      {"ready", absl::StrCat(s.ready())},
      {"delayed", absl::StrCat(s.delayed())},
      {"leased", absl::StrCat(s.leased())},
      {"unfinished", absl::StrCat(s.unfinished())},
      {"dead", absl::StrCat(s.dead())},
      {"qsize", absl::StrCat(sizes.qsize)},
      {"empty", yes_no(sizes.empty)},
      {"full", yes_no(sizes.full)},
      {"shut_down", yes_no(s.shut_down())},
      {"total_put", absl::StrCat(s.total_put())},
      {"total_completed", absl::StrCat(s.total_completed())},
      {"total_failed", absl::StrCat(s.total_failed())},
      {"total_cancelled", absl::StrCat(s.total_cancelled())},
      {"waiting_consumers", absl::StrCat(s.waiting_consumers())},
      {"waiting_producers", absl::StrCat(s.waiting_producers())},
      {"workers", absl::StrCat(s.workers())},
      {"pending_results", absl::StrCat(s.pending_results())},
  };
  fields.insert(fields.end(), std::begin(counters), std::end(counters));
  return fields;
}

}  // namespace taskq::cli
