#include "master/cluster/move_watch.h"

#include <algorithm>

namespace taskq {

MoveWatch::Ticket::~Ticket() { owner_->Remove(id_); }

absl::Status MoveWatch::Ticket::status() const {
  MutexLock lock(&mu_);
  return status_;
}

std::unique_ptr<MoveWatch::Ticket> MoveWatch::Watch(std::vector<std::string> queues,
                                                    std::stop_source on_move) {
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  std::unique_ptr<Ticket> ticket(new Ticket(this, id));
  open_[id] = Entry{ticket.get(), std::move(queues), std::move(on_move)};
  return ticket;
}

void MoveWatch::Moved(const std::vector<std::string>& queues,
                      const std::function<absl::Status(const std::string& queue)>& why) {
  std::vector<std::stop_source> fire;
  {
    MutexLock lock(&mu_);
    // A scan: moves are rare, and streams few next to tasks.
    for (auto& [id, entry] : open_) {
      auto hit = std::find_if(entry.queues.begin(), entry.queues.end(), [&](const auto& q) {
        return std::find(queues.begin(), queues.end(), q) != queues.end();
      });
      if (hit == entry.queues.end()) continue;
      {
        // Under the registry lock: the ticket is alive until Remove.
        MutexLock ticket_lock(&entry.ticket->mu_);
        entry.ticket->status_ = why(*hit);
      }
      fire.push_back(entry.stop);
    }
  }
  for (std::stop_source& s : fire) s.request_stop();
}

void MoveWatch::Remove(uint64_t id) {
  MutexLock lock(&mu_);
  open_.erase(id);
}

}  // namespace taskq
