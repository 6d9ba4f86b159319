#include "master/cluster/node_number.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/private_file.h"
#include "common/read_file.h"

namespace taskq {
namespace {

std::string NodeFile(const std::string& data_dir) { return data_dir + "/cluster-node"; }

std::string NodeKey(const std::string& prefix, uint32_t node) {
  return absl::StrCat(prefix, "nodes/", node);
}

absl::Status Remember(const std::string& data_dir, uint32_t node) {
  return ReplacePrivateFile(NodeFile(data_dir), absl::StrCat(node, "\n"));
}

// Makes sure etcd maps `node` to `name` (it may have been wiped).
absl::Status Confirm(EtcdClient* etcd, const std::string& prefix, const std::string& name,
                     uint32_t node) {
  EtcdKeyValue existing;
  auto created = etcd->CreateIfAbsent(NodeKey(prefix, node), name, 0, &existing);
  if (!created.ok()) return created.status();
  if (!*created && existing.value != name) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this data dir is node ", node, " of the cluster, but etcd gives node ", node,
        " to master \"", existing.value, "\": start it with --name ", existing.value,
        " (or give this master an empty --data-dir)"));
  }
  return absl::OkStatus();
}

// A node number for `name` from etcd: the one it holds already, else the
// lowest free one.
absl::StatusOr<uint32_t> Claim(EtcdClient* etcd, const std::string& prefix,
                               const std::string& name) {
  const std::string dir = prefix + "nodes/";
  auto entries = etcd->GetPrefix(dir);
  if (!entries.ok()) return entries.status();
  std::set<uint32_t> used;
  for (const EtcdKeyValue& kv : *entries) {
    uint32_t n = 0;
    if (!absl::SimpleAtoi(absl::string_view(kv.key).substr(dir.size()), &n)) continue;
    if (kv.value == name) return n;
    used.insert(n);
  }
  for (uint32_t n = 1; n <= kMaxNode; ++n) {
    if (used.count(n)) continue;
    EtcdKeyValue existing;
    auto created = etcd->CreateIfAbsent(NodeKey(prefix, n), name, 0, &existing);
    if (!created.ok()) return created.status();
    if (*created || existing.value == name) return n;
    used.insert(n);  // another master took it meanwhile
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("all ", kMaxNode, " node numbers under ", dir, " are taken"));
}

}  // namespace

absl::StatusOr<uint32_t> RememberedNode(const std::string& data_dir) {
  auto text = ReadFileToString(NodeFile(data_dir), 64);
  if (!text.ok()) return text.status();
  uint32_t node = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &node) || node == 0 ||
      node > kMaxNode) {
    return absl::DataLossError(absl::StrCat(NodeFile(data_dir), " does not hold a node number (1..",
                                            kMaxNode, "): restore it or remove it"));
  }
  return node;
}

absl::StatusOr<uint32_t> ObtainNode(EtcdClient* etcd, const std::string& prefix,
                                    const std::string& name, const std::string& data_dir) {
  auto remembered = RememberedNode(data_dir);
  if (remembered.ok()) {
    if (etcd == nullptr) return *remembered;
    absl::Status s = Confirm(etcd, prefix, name, *remembered);
    if (absl::IsFailedPrecondition(s)) return s;
    if (!s.ok()) LogWarning("cluster: cannot confirm node %d in etcd: %s", *remembered, s.message());
    return *remembered;
  }
  if (!absl::IsNotFound(remembered.status())) return remembered.status();
  if (etcd == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no cluster node number is remembered in ", NodeFile(data_dir),
        " and etcd cannot be reached: a master joins a cluster for the first time only while "
        "etcd answers"));
  }
  auto node = Claim(etcd, prefix, name);
  if (!node.ok()) {
    return absl::Status(node.status().code(),
                        absl::StrCat("cannot get a cluster node number from etcd: ",
                                     node.status().message()));
  }
  if (absl::Status s = Remember(data_dir, *node); !s.ok()) return s;
  return *node;
}

}  // namespace taskq
