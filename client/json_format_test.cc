// Unit tests of the CLI's --json documents: the field names and forms that
// docs/CLI.md ("JSON output") promises scripts.
#include "client/json_format.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::Task DeadTask() {
  v1::Task t;
  t.set_id(42);
  t.set_queue("jobs");
  t.set_state(v1::TASK_STATE_DEAD);
  t.set_handler("exec");
  t.set_attempt(3);
  t.set_payload("boom");
  t.set_origin_queue("jobs");
  t.set_last_error("exit 3:\nboom");
  t.set_enqueued_unix_ms(1738310400000);
  (*t.mutable_headers())["k"] = "v";
  t.add_args("backup");
  v1::Attempt* a = t.add_history();
  a->set_attempt(1);
  a->set_worker("w1");
  a->set_how("failed");
  a->set_error("exit 3");
  a->set_ended_unix_ms(1738310400001);
  return t;
}

TEST(TaskJson, EveryFieldOnOneLine) {
  EXPECT_EQ(TaskJson(DeadTask()),
            R"({"id":42,"queue":"jobs","handler":"exec","priority":0,"reply_to":"",)"
            R"("attempt":3,"enqueued_unix_ms":1738310400000,"dedup_key":"","headers":{"k":"v"},)"
            R"("args":["backup"],"payload":"boom","result_of":0,"outcome":"OUTCOME_UNSPECIFIED",)"
            R"("error":"","state":"TASK_STATE_DEAD","not_before_unix_ms":0,"worker":"",)"
            R"("origin_queue":"jobs","last_error":"exit 3:\nboom","history":[{"attempt":1,)"
            R"("worker":"w1","ended_unix_ms":1738310400001,"how":"failed","error":"exit 3"}]})");
}

TEST(TaskJson, BinaryPayloadIsBase64UnderItsOwnKey) {
  v1::Task t = DeadTask();
  t.set_payload(std::string("\xff\x00", 2));
  const std::string json = TaskJson(t);
  EXPECT_THAT(json, HasSubstr(R"("payload_base64":"/wA=")"));
  EXPECT_THAT(json, Not(HasSubstr(R"("payload":)")));
}

TEST(MessageJson, ResultWithLease) {
  v1::Task r;
  r.set_id(7);
  r.set_queue("replies");
  r.set_result_of(42);
  r.set_outcome(v1::OUTCOME_FAILED);
  r.set_error("boom");
  v1::Delivery d;
  d.set_lease_id(9);
  d.set_lease_deadline_unix_ms(1738310400000);
  const std::string json = MessageJson(r, &d);
  EXPECT_THAT(json, HasSubstr(R"("result_of":42,"outcome":"OUTCOME_FAILED","error":"boom")"));
  EXPECT_THAT(json, HasSubstr(R"("lease_id":9,"lease_deadline_unix_ms":1738310400000})"));
  EXPECT_THAT(json, Not(HasSubstr("state")));
  EXPECT_THAT(MessageJson(r), Not(HasSubstr("lease_id")));
}

TEST(QueueJson, FlatSettingsCountersAndSizes) {
  v1::QueueStats s;
  s.mutable_config()->set_name("jobs");
  s.mutable_config()->set_maxsize(2);
  s.set_ready(1);
  s.set_leased(1);
  s.set_total_put(5);
  EXPECT_EQ(QueueJson(s),
            R"({"name":"jobs","kind":"QUEUE_KIND_FIFO","maxsize":2,"lease_ms":0,)"
            R"("max_attempts":0,"backoff_ms":0,"backoff_max_ms":0,"dead_letter":"jobs",)"
            R"("idle_ttl_ms":0,"ready":1,"delayed":0,"leased":1,"unfinished":0,"dead":0,)"
            R"("qsize":1,"empty":false,"full":true,"shut_down":false,"total_put":5,)"
            R"("total_completed":0,"total_failed":0,"total_cancelled":0,)"
            R"("waiting_consumers":0,"waiting_producers":0,"workers":0,"pending_results":0})");
}

TEST(QueueListJson, OneDocument) {
  EXPECT_EQ(QueueListJson({}), R"({"queues":[]})");
  v1::QueueStats a, b;
  a.mutable_config()->set_name("a");
  b.mutable_config()->set_name("b");
  const std::string json = QueueListJson({a, b});
  EXPECT_THAT(json, HasSubstr(R"({"queues":[{"name":"a",)"));
  EXPECT_THAT(json, HasSubstr(R"(},{"name":"b",)"));
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace taskq::cli
