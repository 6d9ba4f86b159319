#include "common/channel_pool.h"

#include <utility>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

namespace taskq {

ChannelPool::ChannelPool(std::string home_address, std::shared_ptr<grpc::Channel> home,
                         ChannelFactory dial)
    : home_address_(std::move(home_address)), dial_(std::move(dial)) {
  auto entry = std::make_unique<Entry>();
  entry->stub = v1::TaskQueue::NewStub(home);
  entry->channel = std::move(home);
  MutexLock lock(&mu_);
  entries_[home_address_] = std::move(entry);
}

const ChannelPool::Entry& ChannelPool::At(const std::string& address) {
  const std::string& key = address.empty() ? home_address_ : address;
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) return *it->second;
  auto entry = std::make_unique<Entry>();
  entry->channel = dial_ ? dial_(key)
                         : grpc::CreateChannel(key, grpc::InsecureChannelCredentials());
  entry->stub = v1::TaskQueue::NewStub(entry->channel);
  const Entry& ref = *entry;
  entries_[key] = std::move(entry);
  return ref;
}

}  // namespace taskq
