#include "client/json_format.h"

#include <map>
#include <string>

#include "client/json_writer.h"
#include "client/task_format.h"

namespace taskq::cli {
namespace {

// What every form of a task shows: who it is, what it carries, and for a
// result message what it answers.
void WriteTaskCore(JsonWriter& w, const v1::Task& t) {
  w.Key("id").Uint(t.id());
  w.Key("queue").String(t.queue());
  w.Key("handler").String(t.handler());
  w.Key("priority").Int(t.priority());
  w.Key("reply_to").String(t.reply_to());
  w.Key("attempt").Uint(t.attempt());
  w.Key("enqueued_unix_ms").Int(t.enqueued_unix_ms());
  w.Key("dedup_key").String(t.dedup_key());
  // Sorted: the same task prints the same bytes (a proto map has no order).
  w.Key("headers").StringMap(std::map<std::string, std::string>(t.headers().begin(),
                                                                t.headers().end()));
  w.Key("args").BeginArray();
  for (const std::string& a : t.args()) w.String(a);
  w.EndArray();
  w.Bytes("payload", t.payload());
  w.Key("result_of").Uint(t.result_of());
  w.Key("outcome").String(v1::Outcome_Name(t.outcome()));
  w.Key("error").String(t.error());
}

void WriteQueue(JsonWriter& w, const v1::QueueStats& s, const std::string* master = nullptr) {
  const v1::QueueConfig& c = s.config();
  const QueueSizes sizes = SizesOf(s);
  w.BeginObject();
  w.Key("name").String(c.name());
  // Unspecified means FIFO, as the text output says.
  w.Key("kind").String(
      v1::QueueKind_Name(c.kind() == v1::QUEUE_KIND_UNSPECIFIED ? v1::QUEUE_KIND_FIFO : c.kind()));
  w.Key("maxsize").Uint(c.maxsize());
  w.Key("lease_ms").Uint(c.lease_ms());
  w.Key("max_attempts").Uint(c.max_attempts());
  w.Key("backoff_ms").Uint(c.backoff_ms());
  w.Key("backoff_max_ms").Uint(c.backoff_max_ms());
  // Empty = the queue keeps its own dead letters: name the queue, as the
  // text output does.
  w.Key("dead_letter").String(c.dead_letter().empty() ? c.name() : c.dead_letter());
  w.Key("idle_ttl_ms").Uint(c.idle_ttl_ms());
  w.Key("ready").Uint(s.ready());
  w.Key("delayed").Uint(s.delayed());
  w.Key("leased").Uint(s.leased());
  w.Key("unfinished").Uint(s.unfinished());
  w.Key("dead").Uint(s.dead());
  w.Key("qsize").Uint(sizes.qsize);
  w.Key("empty").Bool(sizes.empty);
  w.Key("full").Bool(sizes.full);
  w.Key("shut_down").Bool(s.shut_down());
  w.Key("total_put").Uint(s.total_put());
  w.Key("total_completed").Uint(s.total_completed());
  w.Key("total_failed").Uint(s.total_failed());
  w.Key("total_cancelled").Uint(s.total_cancelled());
  w.Key("waiting_consumers").Uint(s.waiting_consumers());
  w.Key("waiting_producers").Uint(s.waiting_producers());
  w.Key("workers").Uint(s.workers());
  w.Key("pending_results").Uint(s.pending_results());
  if (master != nullptr) w.Key("master").String(*master);
  w.EndObject();
}

}  // namespace

std::string TaskJson(const v1::Task& t) {
  JsonWriter w;
  w.BeginObject();
  WriteTaskCore(w, t);
  w.Key("state").String(v1::TaskState_Name(t.state()));
  w.Key("not_before_unix_ms").Int(t.not_before_unix_ms());
  w.Key("worker").String(t.worker());
  w.Key("origin_queue").String(t.origin_queue());
  w.Key("last_error").String(t.last_error());
  w.Key("history").BeginArray();
  for (const v1::Attempt& a : t.history()) {
    w.BeginObject();
    w.Key("attempt").Uint(a.attempt());
    w.Key("worker").String(a.worker());
    w.Key("ended_unix_ms").Int(a.ended_unix_ms());
    w.Key("how").String(a.how());
    w.Key("error").String(a.error());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

std::string MessageJson(const v1::Task& t, const v1::Delivery* delivery) {
  JsonWriter w;
  w.BeginObject();
  WriteTaskCore(w, t);
  if (delivery != nullptr) {
    w.Key("lease_id").Uint(delivery->lease_id());
    w.Key("lease_deadline_unix_ms").Int(delivery->lease_deadline_unix_ms());
  }
  w.EndObject();
  return w.str();
}

std::string QueueJson(const v1::QueueStats& stats) {
  JsonWriter w;
  WriteQueue(w, stats);
  return w.str();
}

std::string CredentialListJson(const std::vector<v1::CredentialInfo>& credentials) {
  JsonWriter w;
  w.BeginObject().Key("credentials").BeginArray();
  for (const v1::CredentialInfo& c : credentials) {
    w.BeginObject();
    w.Key("name").String(c.name());
    w.Key("role").String(v1::Role_Name(c.role()));
    w.Key("queues").BeginArray();
    for (const std::string& q : c.queues()) w.String(q);
    w.EndArray();
    w.Key("kind").String(v1::CredentialKind_Name(c.kind()));
    w.Key("created_unix_ms").Int(c.created_unix_ms());
    w.Key("expires_unix_ms").Int(c.expires_unix_ms());
    w.Key("revoked_unix_ms").Int(c.revoked_unix_ms());
    w.Key("created_by").String(c.created_by());
    w.Key("certificate_sha256").String(c.certificate_sha256());
    w.EndObject();
  }
  w.EndArray().EndObject();
  return w.str();
}

std::string WorkerListJson(const v1::ListWorkersResponse& workers) {
  JsonWriter w;
  w.BeginObject().Key("workers").BeginArray();
  for (const v1::WorkerInfo& wi : workers.workers()) {
    w.BeginObject();
    w.Key("worker_id").String(wi.worker_id());
    w.Key("host").String(wi.host());
    w.Key("peer").String(wi.peer());
    w.Key("credential").String(wi.credential());
    w.Key("since_unix_ms").Int(wi.since_unix_ms());
    w.Key("queues").BeginArray();
    for (const std::string& q : wi.queues()) w.String(q);
    w.EndArray();
    w.Key("credits").Uint(wi.credits());
    w.Key("running").Uint(wi.running());
    w.Key("running_tasks").BeginArray();
    for (const auto& t : wi.running_tasks()) {
      w.BeginObject();
      w.Key("task_id").Uint(t.task_id());
      w.Key("queue").String(t.queue());
      w.Key("attempt").Uint(t.attempt());
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.Key("total").Uint(workers.total());
  w.EndObject();
  return w.str();
}

std::string QueueListJson(const std::vector<v1::QueueStats>& queues,
                          const std::vector<std::string>* masters) {
  JsonWriter w;
  w.BeginObject().Key("queues").BeginArray();
  for (size_t i = 0; i < queues.size(); ++i) {
    WriteQueue(w, queues[i], masters != nullptr && i < masters->size() ? &(*masters)[i] : nullptr);
  }
  w.EndArray().EndObject();
  return w.str();
}

}  // namespace taskq::cli
