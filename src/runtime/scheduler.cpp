// Scheduler: admission under the cache budget, chunked prefill, decode page reservation, retraction.
#include "runtime/scheduler.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/logging.h"
#include "runtime/speculative.h"

namespace narwhal {

namespace {

// SGLang's constants: future tokens of a request count at most this many (CLIP_MAX_NEW_TOKENS), the
// ratio starts at 0.7 x conservativeness and decays over 600 decode steps to 0.14 of that, a retraction
// re-estimates it assuming 20 more decode steps, and lpm falls back to fcfs beyond 128 waiting requests
// (matching every one against the tree each step would cost more than it saves).
constexpr int64_t kClipMaxNewTokens = 4096;
constexpr double kInitNewTokenRatio = 0.7;
constexpr double kMinNewTokenRatioFactor = 0.14;
constexpr double kNewTokenRatioDecaySteps = 600;
constexpr int64_t kRetractDecodeSteps = 20;
constexpr size_t kLpmQueueLimit = 128;

void erase_from(std::vector<Sequence*>& v, Sequence* seq) { v.erase(std::find(v.begin(), v.end(), seq)); }

}  // namespace

Scheduler::Scheduler(const EngineConfig& config, int max_running, KvPool& pool, RadixCache& cache)
    : config_(config), max_running_(max_running), pool_(pool), cache_(cache) {
  new_token_ratio_ = std::min(1.0, kInitNewTokenRatio * config.schedule_conservativeness);
  min_new_token_ratio_ = std::min(1.0, new_token_ratio_ * kMinNewTokenRatioFactor);
  new_token_ratio_decay_ = (new_token_ratio_ - min_new_token_ratio_) / kNewTokenRatioDecaySteps;
}

void Scheduler::enqueue(Sequence* seq) { waiting_.push_back(seq); }

void Scheduler::add_running(Sequence* seq) { running_.push_back(seq); }

std::span<const int32_t> Scheduler::cacheable_prompt(const Sequence& seq) {
  return std::span<const int32_t>(seq.tokens).first(seq.tokens.size() - 1);
}

StepPlan Scheduler::plan() {
  StepPlan plan;
  for (;;) {
    if (config_.enable_mixed_chunk) {
      plan_decodes(plan);
      plan_extends(plan);
    } else {
      plan_extends(plan);
      if (plan.empty()) plan_decodes(plan);
    }
    if (!plan.empty()) break;
    if (running_.empty()) {
      NW_CHECK(waiting_.empty(), "scheduler: a waiting sequence does not fit the empty cache");
      break;
    }
    // Every running sequence waits for pages that only a retraction frees.
    retract(pick_victim());
  }
  if (std::any_of(plan.items.begin(), plan.items.end(), [](const ScheduledSequence& s) { return s.decode; }))
    new_token_ratio_ = std::max(min_new_token_ratio_, new_token_ratio_ - new_token_ratio_decay_);
  return plan;
}

void Scheduler::plan_decodes(StepPlan& plan) {
  // A decode writes its pending token; speculating, also up to num_steps drafts (a device runner may pad every
  // sequence's to num_steps, so that one verify shape fits the batch) and then the draft model's num_steps - 1
  // positions after the last token it keeps: speculative_reserve's positions from kv_len (2 * num_steps for a
  // chain), as SGLang reserves a verify's.
  // Never past the whole cache, which a sequence alone must always fit (its drafts are clipped to it).
  const int64_t capacity = pool_.num_pages() * pool_.page_size();
  const auto decode_end = [&](const Sequence& s) {
    return std::max(s.kv_len + 1 + static_cast<int64_t>(s.draft.size()),
                    std::min(s.kv_len + std::max<int64_t>(1, speculative_reserve(config_.speculative_num_steps,
                                                                                  config_.speculative_topk,
                                                                                  config_.speculative_num_draft_tokens)),
                             capacity));
  };
  const auto pages_needed = [&] {
    int64_t pages = 0;
    for (const Sequence* s : running_)
      if (s->pending() == 1) pages += std::max<int64_t>(0, pool_.pages_for(decode_end(*s)) - static_cast<int64_t>(s->pages.size()));
    return pages;
  };
  while (pages_needed() > pool_.num_free() + pool_.num_evictable()) {
    Sequence* victim = pick_victim();
    if (!victim) break;
    retract(victim);
  }
  for (Sequence* s : running_)
    if (s->pending() == 1 && grow(*s, decode_end(*s)))
      plan.items.push_back({s, 1 + static_cast<int64_t>(s->draft.size()), true});
}

void Scheduler::plan_extends(StepPlan& plan) {
  const bool chunking = config_.chunked_prefill_size > 0;
  int64_t budget = chunking ? std::min(config_.chunked_prefill_size, config_.max_prefill_tokens)
                            : config_.max_prefill_tokens;
  budget -= static_cast<int64_t>(plan.items.size());  // decode tokens of a mixed step
  // Sequences holding pages go first: a chunked prompt in progress, a fork re-extending its last page.
  for (Sequence* s : running_) {
    if (s->pending() <= 1) continue;
    if (budget <= 0) return;
    const int64_t n = chunk_length(*s, budget, plan.empty());
    if (n == 0 || !grow(*s, s->kv_len + n)) return;
    plan.items.push_back({s, n, false});
    budget -= n;
  }
  const int64_t reserved = reserved_tokens();
  int64_t promised = 0;  // tokens promised to the sequences this step admits
  for (Sequence* s : waiting_order()) {
    if (budget <= 0 || static_cast<int64_t>(running_.size()) + s->forks > max_running_) return;
    if (!plan.empty() && shares_uncached_prefix(*s, cache_.match_length(cacheable_prompt(*s)), plan)) continue;
    s->pages = cache_.match(cacheable_prompt(*s));
    s->kv_len = static_cast<int64_t>(s->pages.size()) * pool_.page_size();
    const int64_t need = s->pending() + std::min(s->remaining_new_tokens(), kClipMaxNewTokens);
    const int64_t available = (pool_.num_free() + pool_.num_evictable()) * pool_.page_size() - reserved - promised;
    const bool alone = running_.empty() && plan.empty();
    const int64_t n = chunk_length(*s, budget, plan.empty());
    if ((need > available && !alone) || n == 0 || !grow(*s, s->kv_len + n)) {
      pool_.release_all(s->pages);
      s->pages.clear();
      s->kv_len = 0;
      return;
    }
    if (!s->admitted) s->cached_tokens = std::min(s->kv_len, s->prompt_len);
    s->admitted = true;
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), s));
    running_.push_back(s);
    plan.items.push_back({s, n, false});
    budget -= n;
    promised += need;
  }
}

std::vector<Sequence*> Scheduler::policy_order() const {
  std::vector<Sequence*> order(waiting_.begin(), waiting_.end());
  if (config_.schedule_policy != SchedulePolicy::kLpm || order.size() > kLpmQueueLimit) return order;
  std::vector<std::pair<int64_t, Sequence*>> keyed;
  for (Sequence* s : order) keyed.emplace_back(cache_.match_length(cacheable_prompt(*s)), s);
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < keyed.size(); ++i) order[i] = keyed[i].second;
  return order;
}

// Max-min fairness over groups: each next place goes to the group with the fewest sequences running or placed
// ahead (a sequence about to fork counts as all its choices), ties to the group whose first sequence the policy
// puts first; within a group the policy order holds.
std::vector<Sequence*> Scheduler::waiting_order() const {
  std::vector<Sequence*> order = policy_order();
  std::unordered_map<uint64_t, size_t> rank;  // group -> its place in `queues`
  std::vector<std::vector<Sequence*>> queues;
  for (Sequence* s : order) {
    const auto [it, fresh] = rank.try_emplace(s->group, queues.size());
    if (fresh) queues.emplace_back();
    queues[it->second].push_back(s);
  }
  if (queues.size() <= 1) return order;
  std::vector<int64_t> load(queues.size(), 0);
  for (const Sequence* s : running_)
    if (auto it = rank.find(s->group); it != rank.end()) load[it->second] += s->forks;
  using Entry = std::pair<int64_t, size_t>;  // (load, rank): the smallest goes next
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> next;
  for (size_t g = 0; g < queues.size(); ++g) next.emplace(load[g], g);
  std::vector<size_t> taken(queues.size(), 0);
  order.clear();
  while (!next.empty()) {
    const auto [group_load, g] = next.top();
    next.pop();
    Sequence* s = queues[g][taken[g]++];
    order.push_back(s);
    if (taken[g] < queues[g].size()) next.emplace(group_load + s->forks, g);
  }
  return order;
}

// In-batch prefix sharing: a sequence whose prompt shares uncached full pages with one this step extends
// waits a step, then finds those pages in the cache instead of computing them a second time.
bool Scheduler::shares_uncached_prefix(const Sequence& seq, int64_t cached, const StepPlan& plan) const {
  const std::span<const int32_t> mine = cacheable_prompt(seq);
  for (const ScheduledSequence& item : plan.items) {
    if (item.decode) continue;
    const std::vector<int32_t>& theirs = item.seq->tokens;
    const size_t limit = std::min<size_t>(mine.size(), static_cast<size_t>(item.seq->kv_len + item.new_tokens));
    const size_t common =
        static_cast<size_t>(std::mismatch(mine.begin(), mine.begin() + limit, theirs.begin()).first - mine.begin());
    if (static_cast<int64_t>(common) / pool_.page_size() * pool_.page_size() > cached) return true;
  }
  return false;
}

int64_t Scheduler::chunk_length(const Sequence& seq, int64_t budget, bool step_empty) const {
  const int64_t pending = seq.pending();
  if (pending <= budget) return pending;
  if (config_.chunked_prefill_size <= 0) return step_empty ? pending : 0;  // unchunked: a long prompt runs alone
  // End chunks on a page boundary when the budget allows, so each finished chunk is cacheable whole pages.
  const int64_t ps = pool_.page_size();
  const int64_t aligned_end = (seq.kv_len + budget) / ps * ps;
  return aligned_end > seq.kv_len ? aligned_end - seq.kv_len : budget;
}

bool Scheduler::allocate(int64_t count, std::vector<int32_t>& out) {
  if (count > pool_.num_free() + pool_.num_evictable()) return false;
  if (count > pool_.num_free()) cache_.evict(count - pool_.num_free());
  return pool_.allocate(count, out);
}

bool Scheduler::grow(Sequence& seq, int64_t tokens) {
  const int64_t missing = pool_.pages_for(tokens) - static_cast<int64_t>(seq.pages.size());
  return missing <= 0 || allocate(missing, seq.pages);
}

int64_t Scheduler::reserved_tokens() const {
  double tokens = 0.0;
  for (const Sequence* s : running_)
    tokens += static_cast<double>(s->pending() - 1) +
              static_cast<double>(std::min(s->remaining_new_tokens(), kClipMaxNewTokens)) * new_token_ratio_;
  return static_cast<int64_t>(tokens);
}

// SGLang's choice: the sequence with the fewest output tokens, then the longest prompt (least work lost,
// most pages freed). The last running sequence is never retracted: alone, it fits by construction.
Sequence* Scheduler::pick_victim() const {
  if (running_.size() <= 1) return nullptr;
  return *std::min_element(running_.begin(), running_.end(), [](const Sequence* a, const Sequence* b) {
    return a->output_len() != b->output_len() ? a->output_len() < b->output_len() : a->prompt_len > b->prompt_len;
  });
}

void Scheduler::retract(Sequence* seq) {
  NW_CHECK(seq != nullptr, "scheduler: no sequence can be retracted");
  erase_from(running_, seq);
  release_pages(*seq);
  waiting_.push_front(seq);
  ++retractions_;
  int64_t decoded = 0, budget = 0;
  for (const Sequence* s : running_) {
    decoded += s->output_len();
    budget += s->max_new_tokens;
  }
  const double estimate = static_cast<double>(decoded + kRetractDecodeSteps * num_running()) /
                          static_cast<double>(std::max<int64_t>(budget, 1));
  new_token_ratio_ = std::min(1.0, estimate);
  NW_LOG(Debug) << "retracted a sequence with " << seq->output_len() << " output tokens; " << running_.size()
                << " running, new_token_ratio " << new_token_ratio_;
}

void Scheduler::complete(const StepPlan& plan) {
  for (const ScheduledSequence& item : plan.items) {
    Sequence& seq = *item.seq;
    // A decode's drafts count once the engine accepts them (Engine::accept_token).
    seq.kv_len += item.decode ? 1 : item.new_tokens;
    if (!item.decode) cache_.insert(std::span<const int32_t>(seq.tokens).first(seq.kv_len), seq.pages);
  }
}

void Scheduler::release_pages(Sequence& seq) {
  seq.draft.clear();  // its drafts' positions go with the pages
  seq.draft_parents.clear();
  cache_.insert(std::span<const int32_t>(seq.tokens).first(seq.kv_len), seq.pages);
  pool_.release_all(seq.pages);
  seq.pages.clear();
  seq.kv_len = 0;
}

void Scheduler::remove(Sequence* seq) {
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end()) waiting_.erase(it);
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) running_.erase(it);
  release_pages(*seq);
}

}  // namespace narwhal
