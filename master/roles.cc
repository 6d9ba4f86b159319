#include "master/roles.h"

#include <fnmatch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "master/queue_engine.h"

namespace taskq {
namespace {

constexpr Access D = Access::kDenied;
constexpr Access A = Access::kAny;
constexpr Access S = Access::kInScope;
constexpr Access O = Access::kOwned;
constexpr Access C = Access::kCreateOwned;

// clang-format off
const std::vector<RpcRule>& Table() {
  static const auto* table = new std::vector<RpcRule>{
    //  rpc               right                         queues checked                                   audit               admin prod  work  read
    {"CreateQueue",      "create queues",              "config.name and config.dead_letter",            "queue.create",     A,    C,    D,    D},
    {"ListQueues",       "list queues",                "each listed queue (others are left out)",       nullptr,            A,    D,    D,    S},
    {"GetQueueStats",    "read queue stats",           "queue",                                         nullptr,            A,    S,    D,    S},
    {"DeleteQueue",      "delete queues",              "queue",                                         "queue.delete",     A,    O,    D,    D},
    {"PurgeQueue",       "purge queues",               "queue",                                         "queue.purge",      A,    D,    D,    D},
    {"UpdateQueue",      "update queues",              "queue",                                         "queue.update",     A,    D,    D,    D},
    {"ShutdownQueue",    "shut queues down",           "queue",                                         "queue.shutdown",   A,    D,    D,    D},
    {"ListWorkers",      "list workers",               "each listed worker's queues (others are left out)", nullptr,        A,    D,    D,    S},
    {"GetTask",          "look up tasks",              "the task's queue",                              nullptr,            A,    S,    D,    S},
    {"CancelTask",       "cancel tasks",               "the task's queue",                              "task.cancel",      A,    D,    D,    D},
    {"ListDead",         "list dead tasks",            "queue",                                         nullptr,            A,    D,    D,    D},
    {"RequeueDead",      "requeue dead tasks",         "queue",                                         "dead.requeue",     A,    D,    D,    D},
    {"PurgeDead",        "purge dead tasks",           "queue",                                         "dead.purge",       A,    D,    D,    D},
    {"Put",              "put tasks",                  "queue and every task's reply_to",               nullptr,            A,    S,    D,    D},
    {"Get",              "get tasks",                  "queue and the queues of acked tasks",           nullptr,            A,    O,    S,    D},
    {"Complete",         "complete tasks",             "the task's queue",                              nullptr,            A,    D,    S,    D},
    {"Ack",              "acknowledge tasks",          "the queue of each acked task",                  nullptr,            A,    O,    S,    D},
    {"Fail",             "fail tasks",                 "the task's queue",                              nullptr,            A,    D,    S,    D},
    {"Release",          "release tasks",              "the task's queue",                              nullptr,            A,    D,    S,    D},
    {"TaskDone",         "mark tasks done",            "queue",                                         nullptr,            A,    D,    S,    D},
    {"Join",             "join queues",                "queue",                                         nullptr,            A,    S,    D,    D},
    {"Work",             "open a Work stream",         "every subscribed queue and each reported task's queue", nullptr,   A,    D,    S,    D},
    {"CreateCredential", "create credentials",         "-",                                             "credential.create", A,   D,    D,    D},
    {"ListCredentials",  "list credentials",           "-",                                             nullptr,            A,    D,    D,    D},
    {"RevokeCredential", "revoke credentials",         "-",                                             "credential.revoke", A,   D,    D,    D},
    {"GetCluster",       "read the cluster map",       "each listed placement (others are left out)",   nullptr,            A,    S,    S,    S},
    {"MoveQueue",        "move queues",                "queue",                                         "queue.move",       A,    D,    D,    D},
    {"AdoptQueues",      "adopt moved queues",         "every adopted queue",                           "queue.adopt",      A,    D,    D,    D},
  };
  return *table;
}
// clang-format on

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

std::string Who(const Principal& who) {
  return absl::StrCat("credential ", Quoted(who.name), " (role ", RoleName(who.role), ")");
}

absl::Status CheckQueue(const Principal& who, const RpcRule& rule, Access access,
                        const QueueRef& q) {
  switch (access) {
    case Access::kDenied:
      return absl::PermissionDeniedError(absl::StrCat(Who(who), " may not ", rule.right));
    case Access::kAny:
      return absl::OkStatus();
    case Access::kInScope:
      if (InScope(who, q.name, q.owner)) return absl::OkStatus();
      return absl::PermissionDeniedError(
          absl::StrCat("credential ", Quoted(who.name), " may not touch queue ", Quoted(q.name),
                       " (its queues: ", absl::StrJoin(who.queues, ", "), ")"));
    case Access::kOwned:
      if (!q.owner.empty() && q.owner == who.name) return absl::OkStatus();
      return absl::PermissionDeniedError(
          absl::StrCat(Who(who), " may ", rule.right, " only on queues it created; ",
                       Quoted(q.name), " is not one"));
    case Access::kCreateOwned:
      if (!absl::StartsWith(q.name, kResultQueuePrefix)) {
        return absl::PermissionDeniedError(absl::StrCat(
            Who(who), " may create only ", kResultQueuePrefix, "* queues, not ", Quoted(q.name)));
      }
      if (!q.owner.empty() && q.owner != who.name) {
        return absl::PermissionDeniedError(
            absl::StrCat("credential ", Quoted(who.name), " may not touch queue ", Quoted(q.name),
                         " (it belongs to another credential)"));
      }
      return absl::OkStatus();
  }
  return absl::PermissionDeniedError("unknown access rule");
}

const char* AccessText(Access a) {
  switch (a) {
    case Access::kDenied:
      return "-";
    case Access::kAny:
      return "yes";
    case Access::kInScope:
      return "its queues";
    case Access::kOwned:
      return "queues it created";
    case Access::kCreateOwned:
      return "`_results.*` only (it becomes the owner)";
  }
  return "?";
}

}  // namespace

Access RpcRule::For(v1::Role role) const {
  switch (role) {
    case v1::ROLE_ADMIN:
      return admin;
    case v1::ROLE_PRODUCER:
      return producer;
    case v1::ROLE_WORKER:
      return worker;
    case v1::ROLE_READER:
      return reader;
    default:
      return Access::kDenied;
  }
}

const std::vector<RpcRule>& RoleTable() { return Table(); }

const RpcRule* FindRule(absl::string_view rpc) {
  for (const RpcRule& r : Table()) {
    if (rpc == r.rpc) return &r;
  }
  return nullptr;
}

bool InScope(const Principal& who, absl::string_view queue, absl::string_view owner) {
  if (who.role == v1::ROLE_ADMIN) return true;
  if (!owner.empty() && owner == who.name) return true;
  const std::string name(queue);
  for (const std::string& pattern : who.queues) {
    if (pattern == "*" || ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

absl::Status AuthorizeCall(const Principal& who, const RpcRule& rule) {
  if (rule.For(who.role) == Access::kDenied) {
    return absl::PermissionDeniedError(absl::StrCat(Who(who), " may not ", rule.right));
  }
  return absl::OkStatus();
}

absl::Status Authorize(const Principal& who, const RpcRule& rule,
                       absl::Span<const QueueRef> queues) {
  if (absl::Status s = AuthorizeCall(who, rule); !s.ok()) return s;
  const Access access = rule.For(who.role);
  for (const QueueRef& q : queues) {
    if (absl::Status s = CheckQueue(who, rule, access, q); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string RoleTableMarkdown() {
  std::string out =
      "| RPC | admin | producer | worker | reader | queues checked |\n"
      "|---|---|---|---|---|---|\n";
  for (const RpcRule& r : Table()) {
    absl::StrAppend(&out, "| ", r.rpc, " | ", AccessText(r.admin), " | ", AccessText(r.producer),
                    " | ", AccessText(r.worker), " | ", AccessText(r.reader), " | ", r.queues,
                    " |\n");
  }
  return out;
}

}  // namespace taskq
