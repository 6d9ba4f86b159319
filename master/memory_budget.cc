#include "master/memory_budget.h"

#include "absl/strings/str_format.h"

namespace taskq {
namespace {

// A std::string's own overhead beyond its characters (heap block header,
// rounding), and a map entry's: near enough for a budget.
constexpr size_t kStringOverhead = 32;
constexpr size_t kMapEntryOverhead = 64;

size_t Str(const std::string& s) { return s.size() + (s.size() > 15 ? kStringOverhead : 0); }

template <typename Headers, typename Args>
size_t VariableBytes(const std::string& payload, const std::string& handler,
                     const std::string& reply_to, const std::string& queue,
                     const Headers& headers, const Args& args) {
  size_t n = Str(payload) + Str(handler) + Str(reply_to) + Str(queue);
  for (const auto& [k, v] : headers) n += Str(k) + Str(v) + kMapEntryOverhead;
  for (const std::string& a : args) n += Str(a) + kStringOverhead;
  return n;
}

double MiB(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

size_t TaskBytes(const v1::Task& t) {
  return VariableBytes(t.payload(), t.handler(), t.reply_to(), t.queue(), t.headers(), t.args()) +
         Str(t.error());
}

size_t SpecBytes(const v1::TaskSpec& s, const std::string& queue) {
  return VariableBytes(s.payload(), s.handler(), s.reply_to(), queue, s.headers(), s.args()) +
         Str(s.dedup_key());
}

absl::Status MemoryBudget::Admit(const PutDemand& d) const {
  if (d.bytes == 0) return absl::OkStatus();  // nothing new (dedup hits)
  const size_t mb = budget_ >> 20;
  if (d.will_wait && waiting_bytes_ + d.bytes > budget_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "memory budget: puts waiting for room in full queues already hold %.1f MiB and this "
        "one needs %.1f MiB more, over the master's --memory-budget-mb %d; retry later or put "
        "with --nowait",
        MiB(waiting_bytes_), MiB(d.bytes), mb));
  }
  if (!durable_) {
    if (task_bytes_ + waiting_bytes_ + d.bytes > budget_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "memory budget: the master holds %.1f MiB of tasks and this put needs %.1f MiB more, "
          "over its --memory-budget-mb %d (with --store memory every task stays in memory); "
          "take or finish tasks first, put fewer at a time, or restart the master with a "
          "larger --memory-budget-mb",
          MiB(task_bytes_ + waiting_bytes_), MiB(d.bytes), mb));
    }
    return absl::OkStatus();
  }
  if (d.delayed_bytes > 0 && pinned_bytes_ + waiting_bytes_ + d.delayed_bytes > pinned_budget_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "memory budget: delayed, leased and dead tasks stay in memory and hold %.1f MiB; this "
        "put's delayed tasks need %.1f MiB more, over the master's --memory-budget-mb %d; "
        "retry later (as delayed tasks come due or tasks finish), put them without a delay, "
        "or restart the master with a larger --memory-budget-mb",
        MiB(pinned_bytes_ + waiting_bytes_), MiB(d.delayed_bytes), mb));
  }
  if (task_bytes_ + waiting_bytes_ + d.bytes > HardCap()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "memory budget: the master holds %.1f MiB of tasks, far over its --memory-budget-mb %d, "
        "while queued tasks are still being written to disk; retry in a moment",
        MiB(task_bytes_ + waiting_bytes_), mb));
  }
  return absl::OkStatus();
}

MemoryUsage MemoryBudget::usage() const {
  MemoryUsage u;
  u.budget_bytes = budget_;
  u.task_bytes = task_bytes_;
  u.pinned_bytes = pinned_bytes_;
  u.waiting_put_bytes = waiting_bytes_;
  u.hard_cap_bytes = durable_ ? HardCap() : budget_;
  u.peak_task_bytes = peak_;
  return u;
}

}  // namespace taskq
