// ParseKedaMetadata: what a ScaledObject's trigger metadata may say, and
// the refusals a person reads in KEDA's log when it says something else.
#include "master/keda_metadata.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace taskq {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

google::protobuf::Map<std::string, std::string> Meta(
    std::initializer_list<std::pair<const std::string, std::string>> entries) {
  google::protobuf::Map<std::string, std::string> m;
  for (const auto& [k, v] : entries) m[k] = v;
  return m;
}

std::string Refusal(const google::protobuf::Map<std::string, std::string>& m) {
  auto q = ParseKedaMetadata(m);
  EXPECT_FALSE(q.ok());
  if (q.ok()) return "";
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << q.status();
  return std::string(q.status().message());
}

TEST(KedaMetadata, ParsesQueueTargetAndActivation) {
  auto q = ParseKedaMetadata(Meta({{"scalerAddress", "taskq-master:6000"},
                                   {"queue", "tasks"},
                                   {"targetPerWorker", "10"},
                                   {"activationDepth", "2"}}));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_THAT(q->queues, ElementsAre("tasks"));
  EXPECT_EQ(q->target_per_worker, 10);
  EXPECT_EQ(q->activation_depth, 2);
}

TEST(KedaMetadata, SeveralQueuesAndFromEnvKeys) {
  auto q = ParseKedaMetadata(
      Meta({{"queueFromEnv", " a, b ,a,"}, {"targetPerWorkerFromEnv", "5"}, {"caCert", "x"}}));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_THAT(q->queues, ElementsAre("a", "b"));
  EXPECT_EQ(q->target_per_worker, 5);
  EXPECT_EQ(q->activation_depth, 0);
}

TEST(KedaMetadata, RefusesWhatItCannotUse) {
  EXPECT_THAT(Refusal(Meta({{"targetPerWorker", "10"}})), HasSubstr("queue is missing"));
  EXPECT_THAT(Refusal(Meta({{"queue", "tasks"}})), HasSubstr("targetPerWorker is missing"));
  EXPECT_THAT(Refusal(Meta({{"queue", "tasks"}, {"targetPerWorker", "0"}})),
              HasSubstr("targetPerWorker is \"0\": want a whole number from 1 to"));
  EXPECT_THAT(Refusal(Meta({{"queue", "tasks"}, {"targetPerWorker", "ten"}})),
              HasSubstr("targetPerWorker is \"ten\""));
  EXPECT_THAT(
      Refusal(Meta({{"queue", "tasks"}, {"targetPerWorker", "1"}, {"activationDepth", "-1"}})),
      HasSubstr("activationDepth is \"-1\""));
  EXPECT_THAT(Refusal(Meta({{"queue", "bad name"}, {"targetPerWorker", "1"}})),
              HasSubstr("outside [A-Za-z0-9_.:-]"));
  EXPECT_THAT(Refusal(Meta({{"queue", " , "}, {"targetPerWorker", "1"}})),
              HasSubstr("names no queue"));
  EXPECT_THAT(Refusal(Meta({{"queue", "tasks"}, {"targetPerworker", "1"}})),
              HasSubstr("unknown key \"targetPerworker\""));
  EXPECT_THAT(
      Refusal(Meta({{"queue", "tasks"}, {"queueFromEnv", "x"}, {"targetPerWorker", "1"}})),
      HasSubstr("queue is given twice"));
}

TEST(KedaMetadata, SizesAreBounded) {
  std::string many;
  for (int i = 0; i < 17; ++i) absl::StrAppend(&many, "q", i, ",");
  EXPECT_THAT(Refusal(Meta({{"queue", many}, {"targetPerWorker", "1"}})),
              HasSubstr("more than 16 queues"));
  EXPECT_THAT(Refusal(Meta({{"queue", std::string(129, 'q')}, {"targetPerWorker", "1"}})),
              HasSubstr("the limit is 128"));
  EXPECT_THAT(Refusal(Meta({{"queue", "tasks"},
                            {"targetPerWorker", "1"},
                            {"caCert", std::string(kMaxKedaMetadataValueBytes + 1, 'c')}})),
              HasSubstr("the value of caCert is"));
  google::protobuf::Map<std::string, std::string> wide;
  for (size_t i = 0; i <= kMaxKedaMetadataEntries; ++i) wide[absl::StrCat("k", i)] = "v";
  EXPECT_THAT(Refusal(wide), HasSubstr("keys; the limit is 32"));
  EXPECT_THAT(Refusal(Meta({{std::string(200, 'k'), "v"}})), HasSubstr("a key is 200 bytes"));
}

}  // namespace
}  // namespace taskq
