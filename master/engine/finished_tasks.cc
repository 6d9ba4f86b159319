#include "master/engine/finished_tasks.h"

#include <iterator>
#include <utility>

namespace taskq {

FinishedTasks::FinishedTasks(size_t max_tasks, size_t max_bytes)
    : max_tasks_(max_tasks), max_bytes_(max_bytes) {
  names_.push_back(Name{"", 1});  // ref 0: never released
}

FinishedTasks::NameRef FinishedTasks::Intern(absl::string_view name) {
  if (name.empty()) return 0;
  for (NameRef ref : recent_) {
    if (ref != 0 && names_[ref].text == name) {
      ++names_[ref].refs;
      return ref;
    }
  }
  if (auto it = name_index_.find(name); it != name_index_.end()) {
    ++names_[it->second].refs;
    Remember(it->second);
    return it->second;
  }
  NameRef ref;
  if (!free_names_.empty()) {
    ref = free_names_.back();
    free_names_.pop_back();
  } else {
    ref = static_cast<NameRef>(names_.size());
    names_.emplace_back();
  }
  names_[ref].text.assign(name.data(), name.size());
  names_[ref].refs = 1;
  name_index_.emplace(names_[ref].text, ref);
  Remember(ref);
  bytes_ += name.size() + sizeof(Name) + 2 * sizeof(NameRef);
  return ref;
}

void FinishedTasks::Remember(NameRef ref) {
  // Most recent first; a name already here moves to the front.
  size_t i = 0;
  while (i + 1 < std::size(recent_) && recent_[i] != ref) ++i;
  for (; i > 0; --i) recent_[i] = recent_[i - 1];
  recent_[0] = ref;
}

void FinishedTasks::Release(NameRef ref) {
  if (ref == 0) return;
  Name& n = names_[ref];
  if (--n.refs != 0) return;
  bytes_ -= n.text.size() + sizeof(Name) + 2 * sizeof(NameRef);
  name_index_.erase(n.text);
  std::string().swap(n.text);
  free_names_.push_back(ref);
  for (NameRef& recent : recent_) {
    if (recent == ref) recent = 0;
  }
}

size_t FinishedTasks::ExtraBytes(const Extra& extra) {
  size_t n = sizeof(Extra) + extra.dedup_key.size() + extra.last_error.size();
  for (const v1::Attempt& a : extra.history) {
    n += sizeof(v1::Attempt) + a.worker().size() + a.how().size() + a.error().size();
  }
  return n;
}

void FinishedTasks::Add(const v1::Task& task, v1::TaskState state, Extra extra) {
  if (max_tasks_ == 0) return;
  if (index_.contains(task.id())) return;  // a task finishes once
  Record r;
  r.id = task.id();
  r.result_of = task.result_of();
  r.enqueued_unix_ms = task.enqueued_unix_ms();
  r.priority = task.priority();
  r.attempt = task.attempt();
  r.queue = Intern(task.queue());
  r.handler = Intern(task.handler());
  r.reply_to = Intern(task.reply_to());
  r.state = static_cast<uint8_t>(state);
  r.outcome = static_cast<uint8_t>(task.outcome());
  bytes_ += kRecordBytes;
  if (!extra.empty()) {
    bytes_ += ExtraBytes(extra);
    r.extra = std::make_unique<Extra>(std::move(extra));
  }
  index_.emplace(r.id, first_seq_ + records_.size());
  records_.push_back(std::move(r));
  while (records_.size() > max_tasks_ || (bytes_ > max_bytes_ && records_.size() > 1)) {
    ForgetOldest();
  }
}

void FinishedTasks::ForgetOldest() {
  Record& r = records_.front();
  index_.erase(r.id);
  Release(r.queue);
  Release(r.handler);
  Release(r.reply_to);
  bytes_ -= kRecordBytes;
  if (r.extra) bytes_ -= ExtraBytes(*r.extra);
  records_.pop_front();
  ++first_seq_;
}

const FinishedTasks::Record* FinishedTasks::Find(uint64_t id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  return &records_[it->second - first_seq_];
}

std::optional<v1::TaskState> FinishedTasks::StateOf(uint64_t id) const {
  const Record* r = Find(id);
  if (r == nullptr) return std::nullopt;
  return static_cast<v1::TaskState>(r->state);
}

const std::string* FinishedTasks::QueueOf(uint64_t id) const {
  const Record* r = Find(id);
  return r == nullptr ? nullptr : &names_[r->queue].text;
}

std::optional<v1::Task> FinishedTasks::Describe(uint64_t id) const {
  const Record* r = Find(id);
  if (r == nullptr) return std::nullopt;
  v1::Task t;
  t.set_id(r->id);
  t.set_queue(names_[r->queue].text);
  t.set_handler(names_[r->handler].text);
  t.set_priority(r->priority);
  t.set_reply_to(names_[r->reply_to].text);
  t.set_attempt(r->attempt);
  t.set_enqueued_unix_ms(r->enqueued_unix_ms);
  t.set_result_of(r->result_of);
  t.set_outcome(static_cast<v1::Outcome>(r->outcome));
  t.set_state(static_cast<v1::TaskState>(r->state));
  if (r->extra) {
    t.set_dedup_key(r->extra->dedup_key);
    t.set_last_error(r->extra->last_error);
    for (const v1::Attempt& a : r->extra->history) *t.add_history() = a;
  }
  return t;
}

}  // namespace taskq
