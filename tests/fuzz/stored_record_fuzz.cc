// Fuzz target: the master's recovery from its store. An input is a few
// queue records and task records (arbitrary bytes where a serialized
// StoredQueue / StoredTask belongs, with payloads), written straight into a
// fresh SQLite store (framing: tests/fuzz/make_seeds.py); then an engine
// recovers from it and is used a little
// (list, stats, look-ups, a lease). Recovery must either succeed or refuse
// with an error status (DATA_LOSS for records it cannot parse) — never
// crash, and never hand out a task it could not read.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/sync.h"
#include "master/engine/task_engine.h"
#include "master/sqlite_store.h"
#include "tests/fuzz/fuzz_reader.h"

namespace taskq {
namespace {

std::string TempDir() {
  const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = absl::StrCat(base, "/taskq-fuzz-XXXXXX");
  return mkdtemp(tmpl.data());
}

void Wait(Store& store) {
  Notification done;
  store.WhenDurable(store.LastWritten(), [&](absl::Status) { done.Notify(); });
  done.WaitForNotification();
}

void Run(fuzz::FuzzReader& in, const std::string& dir) {
  SqliteStoreOptions options;
  options.dir = dir + "/data";
  options.fsync = FsyncPolicy::kNever;
  options.min_free_bytes = 0;
  std::vector<uint64_t> ids;
  const uint8_t flags = in.Byte();
  {
    auto store = SqliteStore::Open(options);
    if (!store.ok()) return;
    auto batch = (*store)->NewBatch();
    for (int i = 0, n = in.Byte() % 4; i < n; ++i) {
      std::string name = in.String();
      batch->PutRecord(absl::StrCat("q", name), in.String(/*wide=*/true));
    }
    for (int i = 0, n = in.Byte() % 9; i < n; ++i) {
      const uint64_t id = in.U64() % (uint64_t{1} << 40) + 1;
      ids.push_back(id);
      std::string record = in.String(/*wide=*/true);
      std::string payload = in.String(/*wide=*/true);
      batch->AddTask(id, std::move(record), payload);
    }
    if (flags & 1) batch->PutRecord("snext_id", in.Bytes(8));
    if (flags & 2) batch->PutRecord("sepoch", in.Bytes(8));
    (*store)->Write(std::move(batch));
    Wait(**store);
  }
  auto store = SqliteStore::Open(options);
  if (!store.ok()) return;
  EngineOptions engine_options;
  engine_options.random_seed = 1;
  engine_options.memory_budget_bytes = (flags & 4) ? 0 : 1 << 20;
  TaskEngine engine(engine_options, RealClock::Get());
  if (!engine.Recover(store->get()).ok()) return;  // refused: fine
  auto page = engine.ListQueues(v1::ListQueuesRequest());
  if (!page.ok()) return;
  for (const v1::QueueStats& q : page->queues()) {
    engine.Stats(q.config().name()).IgnoreError();
    GetArgs get;
    get.queue = q.config().name();
    get.max_tasks = 10;
    get.nowait = true;
    get.lease = true;
    engine.Get(std::move(get), [](auto) {});
    engine.ListDead(q.config().name(), 0, 10).IgnoreError();
  }
  for (uint64_t id : ids) engine.GetTask(id).IgnoreError();
  engine.WhenDurable([](absl::Status) {});
  engine.Shutdown();
  Wait(**store);
}

}  // namespace
}  // namespace taskq

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    taskq::SetLogLevel(taskq::LogLevel::kError);
    taskq::InitLogging("stored_record_fuzz", taskq::LogLevel::kError);
    return true;
  }();
  (void)quiet;
  taskq::fuzz::FuzzReader in(data, size);
  const std::string dir = taskq::TempDir();
  taskq::Run(in, dir);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
