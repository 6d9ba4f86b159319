#include "master/revocations.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace taskq {

Revocations::Ticket::~Ticket() { owner_->Remove(credential_, id_); }

grpc::Status Revocations::Ticket::status() const {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      absl::StrCat("credential \"", credential_, "\" was revoked"));
}

std::unique_ptr<Revocations::Ticket> Revocations::Watch(const std::string& credential,
                                                        std::stop_source on_revoke) {
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  std::unique_ptr<Ticket> ticket(new Ticket(this, credential, id));
  open_[credential][id] = Entry{ticket.get(), std::move(on_revoke)};
  return ticket;
}

void Revocations::Revoke(const std::string& credential) {
  std::vector<std::stop_source> fire;
  {
    MutexLock lock(&mu_);
    auto it = open_.find(credential);
    if (it == open_.end()) return;
    for (auto& [id, entry] : it->second) {
      // Under the lock: the ticket is alive until Remove, which takes it.
      entry.ticket->revoked_.store(true, std::memory_order_release);
      fire.push_back(entry.stop);
    }
  }
  for (std::stop_source& s : fire) s.request_stop();
}

void Revocations::Remove(const std::string& credential, uint64_t id) {
  MutexLock lock(&mu_);
  auto it = open_.find(credential);
  if (it == open_.end()) return;
  it->second.erase(id);
  if (it->second.empty()) open_.erase(it);
}

}  // namespace taskq
