// The CLI's --json documents (docs/CLI.md, "JSON output"): a task as
// `status`/`dlq` show it, a message as `get`/`results`/`submit --wait`
// print it, and a queue as `queue list`/`queue stats` show it. Field names
// are the proto's (taskq.v1), enum values their proto names
// ("TASK_STATE_DEAD"), integers JSON numbers, payloads text or base64
// (JsonWriter::Bytes). Every field is always present (empty, 0 or false
// when it does not apply), so a script can rely on the keys; new fields
// may be added, none renamed or removed.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

// `taskq status --json`, `dlq show --json`, a line of `dlq list --json`:
// the task's fields, its state and history, on one line.
std::string TaskJson(const v1::Task& task);

// A line of `get --json`, `results --json`, `submit --wait --json`: a
// delivered task or result message (no state or history). With `delivery`
// (a lease from `get --lease`), also lease_id and lease_deadline_unix_ms.
std::string MessageJson(const v1::Task& task, const v1::Delivery* delivery = nullptr);

// `queue stats --json`: settings and counters of one queue, flat, plus
// Python's qsize/empty/full.
std::string QueueJson(const v1::QueueStats& stats);

// `queue list --json`: {"queues":[QueueJson...]} in the order given; with
// `masters` (one per queue), each also has "master": the master that owns
// it ("" for a single master).
std::string QueueListJson(const std::vector<v1::QueueStats>& queues,
                          const std::vector<std::string>* masters = nullptr);

// `credential list --json`: {"credentials":[...]}, each with the fields of
// taskq.v1.CredentialInfo (never a secret: the master sends none).
std::string CredentialListJson(const std::vector<v1::CredentialInfo>& credentials);

// `workers --json`: {"workers":[...],"total":N}, each with the fields of
// taskq.v1.WorkerInfo.
std::string WorkerListJson(const v1::ListWorkersResponse& workers);

}  // namespace taskq::cli
