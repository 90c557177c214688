// RadixCache: page-granular prefix matching, insertion with de-duplication, and LRU eviction of leaves.
#include "runtime/radix_cache.h"

#include <algorithm>
#include <queue>

namespace narwhal {

struct RadixCache::Node {
  std::vector<int32_t> tokens;
  std::vector<int32_t> pages;
  Node* parent = nullptr;
  std::map<Key, std::unique_ptr<Node>> children;
  uint64_t last_used = 0;
};

RadixCache::RadixCache(KvPool& pool, bool enabled)
    : pool_(pool), enabled_(enabled), page_size_(pool.page_size()), root_(std::make_unique<Node>()) {}

// The tree's references go back to the pool, so a pool that outlives the cache balances to zero.
RadixCache::~RadixCache() {
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (int32_t page : node->pages) {
      pool_.set_cached(page, false);
      pool_.release(page);
    }
    for (auto& [key, child] : node->children) stack.push_back(child.get());
  }
}

RadixCache::Key RadixCache::page_key(std::span<const int32_t> tokens, int64_t page) const {
  return Key(tokens.begin() + page * page_size_, tokens.begin() + (page + 1) * page_size_);
}

int64_t RadixCache::common_pages(const Node& node, std::span<const int32_t> tokens, int64_t first,
                                 int64_t limit) const {
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(node.pages.size()), limit - first);
  for (int64_t p = 0; p < n; ++p)
    if (!std::equal(node.tokens.begin() + p * page_size_, node.tokens.begin() + (p + 1) * page_size_,
                    tokens.begin() + (first + p) * page_size_))
      return p;
  return n;
}

RadixCache::Node* RadixCache::split(Node* node, int64_t pages) {
  Node* parent = node->parent;
  auto upper = std::make_unique<Node>();
  upper->tokens.assign(node->tokens.begin(), node->tokens.begin() + pages * page_size_);
  upper->pages.assign(node->pages.begin(), node->pages.begin() + pages);
  upper->parent = parent;
  upper->last_used = node->last_used;
  node->tokens.erase(node->tokens.begin(), node->tokens.begin() + pages * page_size_);
  node->pages.erase(node->pages.begin(), node->pages.begin() + pages);
  std::unique_ptr<Node>& slot = parent->children[page_key(upper->tokens, 0)];
  std::unique_ptr<Node> lower = std::move(slot);
  lower->parent = upper.get();
  upper->children[page_key(lower->tokens, 0)] = std::move(lower);
  slot = std::move(upper);
  return slot.get();
}

std::vector<int32_t> RadixCache::match(std::span<const int32_t> tokens) {
  std::vector<int32_t> pages;
  if (!enabled_) return pages;
  const int64_t full = static_cast<int64_t>(tokens.size()) / page_size_;
  const uint64_t now = ++clock_;
  Node* node = root_.get();
  int64_t page = 0;
  while (page < full) {
    auto it = node->children.find(page_key(tokens, page));
    if (it == node->children.end()) break;
    Node* child = it->second.get();
    const int64_t common = common_pages(*child, tokens, page, full);
    // Split so that the matched pages form whole nodes: LRU time and eviction then follow the match exactly.
    if (common < static_cast<int64_t>(child->pages.size())) child = split(child, common);
    child->last_used = now;
    for (int32_t p : child->pages) {
      pool_.retain(p);
      pages.push_back(p);
    }
    page += common;
    node = child;
  }
  return pages;
}

int64_t RadixCache::match_length(std::span<const int32_t> tokens) const {
  if (!enabled_) return 0;
  const int64_t full = static_cast<int64_t>(tokens.size()) / page_size_;
  const Node* node = root_.get();
  int64_t page = 0;
  while (page < full) {
    auto it = node->children.find(page_key(tokens, page));
    if (it == node->children.end()) break;
    const int64_t common = common_pages(*it->second, tokens, page, full);
    page += common;
    if (common < static_cast<int64_t>(it->second->pages.size())) break;
    node = it->second.get();
  }
  return page * page_size_;
}

void RadixCache::insert(std::span<const int32_t> tokens, std::vector<int32_t>& pages) {
  if (!enabled_) return;
  const int64_t full = std::min(static_cast<int64_t>(tokens.size()) / page_size_, static_cast<int64_t>(pages.size()));
  const uint64_t now = ++clock_;
  Node* node = root_.get();
  int64_t page = 0;
  while (page < full) {
    Key key = page_key(tokens, page);
    auto it = node->children.find(key);
    if (it == node->children.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->tokens.assign(tokens.begin() + page * page_size_, tokens.begin() + full * page_size_);
      leaf->pages.assign(pages.begin() + page, pages.begin() + full);
      leaf->parent = node;
      leaf->last_used = now;
      for (int32_t p : leaf->pages) {
        pool_.retain(p);
        pool_.set_cached(p, true);
      }
      cached_pages_ += full - page;
      node->children.emplace(std::move(key), std::move(leaf));
      return;
    }
    Node* child = it->second.get();
    const int64_t common = common_pages(*child, tokens, page, full);
    if (common < static_cast<int64_t>(child->pages.size())) child = split(child, common);
    child->last_used = now;
    for (int64_t i = 0; i < common; ++i) {
      int32_t& mine = pages[page + i];
      if (mine == child->pages[i]) continue;
      pool_.retain(child->pages[i]);
      pool_.release(mine);
      mine = child->pages[i];
    }
    page += common;
    node = child;
  }
}

void RadixCache::evict_tail(Node* leaf, int64_t want, int64_t& freed) {
  while (!leaf->pages.empty() && freed < want && pool_.refcount(leaf->pages.back()) == 1) {
    const int32_t page = leaf->pages.back();
    leaf->pages.pop_back();
    leaf->tokens.resize(leaf->tokens.size() - page_size_);
    pool_.set_cached(page, false);
    pool_.release(page);
    --cached_pages_;
    ++freed;
  }
}

int64_t RadixCache::evict(int64_t num_pages) {
  using Entry = std::pair<uint64_t, Node*>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> leaves;
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    if (node->children.empty() && node != root_.get()) leaves.emplace(node->last_used, node);
    for (auto& [key, child] : node->children) stack.push_back(child.get());
  }
  int64_t freed = 0;
  while (freed < num_pages && !leaves.empty()) {
    Node* leaf = leaves.top().second;
    leaves.pop();
    Key key = page_key(leaf->tokens, 0);
    evict_tail(leaf, num_pages, freed);
    if (!leaf->pages.empty()) continue;  // still in use (or enough freed): it stays a leaf
    Node* parent = leaf->parent;
    parent->children.erase(key);
    if (parent->children.empty() && parent != root_.get()) leaves.emplace(parent->last_used, parent);
  }
  return freed;
}

}  // namespace narwhal
