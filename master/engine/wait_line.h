// WaitLine: one queue's blocked calls of one kind (getters, putters or
// joiners), by wait id, oldest first: whoever waited longest is served
// first. The calls themselves (arguments, callbacks, deadline) are the
// engine's; a line holds only their ids.
//
// A call that ends elsewhere (timed out, cancelled, failed) is not looked
// for in the line: it is counted out (Ended) and its id stays until it
// reaches the front (the engine skips ids it no longer knows) or until
// Compact drops the ended ids once they outnumber the live ones, so churn
// cannot grow a line without bound.
//
// Thread-safety: none. Each queue owns its lines; the engine's mutex
// guards them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace taskq {

class WaitLine {
 public:
  using WaitId = uint64_t;
  using const_iterator = std::deque<WaitId>::const_iterator;

  void Push(WaitId id) {
    ids_.push_back(id);
    ++live_;
  }
  // A call in this line ended (served, failed, timed out or cancelled).
  void Ended() {
    if (live_ > 0) --live_;
  }
  // Calls still waiting.
  uint32_t live() const { return live_; }

  // Whether any id is left, live or ended.
  bool empty() const { return ids_.empty(); }
  WaitId Front() const { return ids_.front(); }
  void PopFront() { ids_.pop_front(); }
  // Every id, in order (a copy: failing the calls may compact the line).
  std::vector<WaitId> Ids() const { return {ids_.begin(), ids_.end()}; }
  const_iterator begin() const { return ids_.begin(); }
  const_iterator end() const { return ids_.end(); }
  // Forgets every id (all were served).
  void Clear() {
    ids_.clear();
    live_ = 0;
  }

  // Drops the ids for which is_live(id) is false once there are more than
  // twice as many ids as live calls (plus some slack).
  template <typename IsLive>
  void Compact(IsLive is_live) {
    if (ids_.size() <= 2 * static_cast<size_t>(live_) + kSlack) return;
    size_t kept = 0;
    for (WaitId id : ids_) {
      if (is_live(id)) ids_[kept++] = id;
    }
    ids_.resize(kept);
  }
  size_t size() const { return ids_.size(); }

 private:
  static constexpr size_t kSlack = 64;
  std::deque<WaitId> ids_;
  uint32_t live_ = 0;
};

}  // namespace taskq
