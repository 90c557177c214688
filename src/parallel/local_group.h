// LocalGroup: where the ranks of one group that are threads of this process meet in shared memory. Each posts
// its blocks, all meet, each copies what it needs straight out of the others' memory, all meet again.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/exchange_types.h"
#include "parallel/socket.h"
#include "parallel/world_status.h"

namespace narwhal {

class LocalGroup {
 public:
  struct Post {
    CallSignature signature;
    uint64_t seq = 0;
    const PeerBlock* blocks = nullptr;  // the poster's blocks, indexed by group rank
  };
  // Gets every local rank's post, indexed by group rank (null for ranks in other processes).
  using Take = std::function<void(const std::vector<const Post*>& posts)>;
  // Names group ranks in errors ("ranks 2, 3 (node 1)").
  using Describe = std::function<std::string(const std::vector<int>& group_ranks)>;

  // A group of `group_size` ranks of which `local_ranks` (group ranks) are threads of this process.
  LocalGroup(int group_size, std::vector<int> local_ranks, std::shared_ptr<WorldStatus> status);

  int local_size() const { return static_cast<int>(local_.size()); }

  // Posts as group rank `me`, waits for every local rank's post, runs `take`, and returns once every local rank
  // has taken (so posts, and the memory they point to, stay valid until then). A wait ends with an Error at the
  // deadline (naming the ranks that did not arrive) or once the world has failed; a throwing `take` fails the
  // world, so the others do not wait for it.
  void exchange(int me, const Post& post, const Take& take, const Deadline& deadline, const std::string& where,
                const Describe& describe);

  // The LocalGroup of a group that split() made; `key` names that group, and the first local rank to ask makes it.
  std::shared_ptr<LocalGroup> child(uint64_t key, int group_size, const std::vector<int>& local_ranks);

 private:
  void meet(int me, const Deadline& deadline, const std::string& where, const Describe& describe);

  const int group_size_;
  const std::vector<int> local_;
  const std::shared_ptr<WorldStatus> status_;
  std::mutex mutex_;
  std::condition_variable cv_;
  // A generation-counted barrier: the last arrival of a generation resets the count and wakes the others.
  uint64_t generation_ = 0;
  int arrivals_ = 0;
  std::vector<bool> arrived_;           // by group rank, this generation
  std::vector<const Post*> posts_;      // by group rank
  std::map<uint64_t, std::shared_ptr<LocalGroup>> children_;
};

}  // namespace narwhal
