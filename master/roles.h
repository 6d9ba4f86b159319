// The role table: for every RPC of taskq.v1.TaskQueue, which roles may call
// it and how the queues it names are checked against the caller's
// credential. It is the one source for enforcement (master/service.cc,
// master/work_stream.cc), for the tests (master/role_table_test.cc,
// tests/roles_test.cc iterate over it) and for docs/SECURITY.md
// (RoleTableMarkdown).
//
// Queue checks: a queue is in a credential's scope when its name matches
// one of the credential's patterns (fnmatch(3) globs without FNM_PATHNAME;
// "*" = every queue) or the credential owns it (QueueConfig.owner: a
// producer's `_results.*` queue). Admins are never checked.
//
// Refusals are PERMISSION_DENIED and name the missing right and the
// credential, never a secret:
//   credential "w1" (role worker) may not delete queues
//   credential "p1" may not touch queue "billing" (its queues: tasks, img.*)
//
// Thread-safety: the table is immutable; all functions are safe from any
// thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "master/credentials.h"

namespace taskq {

// How one role may use one RPC.
enum class Access {
  kDenied,
  kAny,        // no queue check
  kInScope,    // every queue the call names is in the credential's scope
  kOwned,      // every queue the call names is owned by the credential
  // CreateQueue: only `_results.*` names; the credential becomes the owner,
  // and a queue of that name owned by another is refused.
  kCreateOwned,
};

struct RpcRule {
  const char* rpc;          // method name in service TaskQueue
  const char* right;        // "delete queues": the refusal says "may not <right>"
  const char* queues;       // which queues are checked, for the docs
  const char* audit;        // action name in the audit log; nullptr = not audited
  Access admin, producer, worker, reader;

  Access For(v1::Role role) const;
};

// Every RPC of the service, in proto order.
const std::vector<RpcRule>& RoleTable();
// The rule of `rpc`; nullptr for a method the table does not know (which
// is refused).
const RpcRule* FindRule(absl::string_view rpc);

// A queue a call names, with its owner (empty if none, or unknown).
struct QueueRef {
  std::string name;
  std::string owner;
};

using Principal = CredentialTable::Principal;

// Whether `queue` (owned by `owner`) is in `who`'s scope.
bool InScope(const Principal& who, absl::string_view queue, absl::string_view owner);

// May `who` call `rule` at all (before the request is read)?
// PERMISSION_DENIED if its role has no access.
absl::Status AuthorizeCall(const Principal& who, const RpcRule& rule);
// May `who` make this call on `queues`? Includes AuthorizeCall.
absl::Status Authorize(const Principal& who, const RpcRule& rule, absl::Span<const QueueRef> queues);

// The table as markdown (docs/SECURITY.md, "Roles").
std::string RoleTableMarkdown();

}  // namespace taskq
