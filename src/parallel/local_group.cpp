// LocalGroup: the two meetings of an exchange and the registry of split groups.
#include "parallel/local_group.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

LocalGroup::LocalGroup(int group_size, std::vector<int> local_ranks, std::shared_ptr<WorldStatus> status)
    : group_size_(group_size),
      local_(std::move(local_ranks)),
      status_(std::move(status)),
      arrived_(group_size, false),
      posts_(group_size, nullptr) {}

void LocalGroup::meet(int me, const Deadline& deadline, const std::string& where, const Describe& describe) {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t generation = generation_;
  arrived_[me] = true;
  if (++arrivals_ == local_size()) {
    arrivals_ = 0;
    std::fill(arrived_.begin(), arrived_.end(), false);
    ++generation_;
    cv_.notify_all();
    return;
  }
  while (generation_ == generation) {
    status_->check(where);
    if (deadline.passed()) {
      std::vector<int> missing;
      for (int r : local_)
        if (!arrived_[r]) missing.push_back(r);
      throw Error(cat(where, ": ", describe(missing), " did not get there within ", deadline.seconds(), " s"));
    }
    // Short slices, so that a failure elsewhere (recorded without a notify) is seen promptly.
    cv_.wait_for(lock, std::chrono::milliseconds(std::max(1, deadline.slice_ms(20))));
  }
}

void LocalGroup::exchange(int me, const Post& post, const Take& take, const Deadline& deadline,
                          const std::string& where, const Describe& describe) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    posts_[me] = &post;
  }
  meet(me, deadline, where, describe);
  std::vector<const Post*> posts;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    posts = posts_;
  }
  try {
    take(posts);
  } catch (const Error& e) {
    status_->fail(e.what());
    throw;
  }
  meet(me, deadline, where, describe);
}

std::shared_ptr<LocalGroup> LocalGroup::child(uint64_t key, int group_size, const std::vector<int>& local_ranks) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::shared_ptr<LocalGroup>& group = children_[key];
  if (!group) group = std::make_shared<LocalGroup>(group_size, local_ranks, status_);
  return group;
}

}  // namespace narwhal
