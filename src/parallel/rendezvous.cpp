// join_nodes: fingerprints compared flag by flag; NodeWatchdog: the store's lost clients, polled.
#include "parallel/rendezvous.h"

#include <algorithm>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/json.h"

namespace narwhal {

namespace {

std::string join_key(int node) { return cat("join/node/", node); }
std::string failure_key(int node) { return cat("failed/node/", node); }
constexpr const char* kFailures = "failed/count";

// "--page-size: 64 on ranks 0-7 (node 0), 32 on ranks 8-15 (node 1)", or "" when every node agrees.
std::string differences(const std::vector<std::optional<Fingerprint>>& prints, const ParallelConfig& config) {
  std::set<std::string> flags;
  for (const auto& p : prints)
    if (p)
      for (const auto& [flag, value] : *p) flags.insert(flag);
  std::string out;
  for (const std::string& flag : flags) {
    std::vector<std::pair<std::string, std::vector<int>>> values;  // each value and its ranks, by first node
    for (int node = 0; node < static_cast<int>(prints.size()); ++node) {
      if (!prints[node]) continue;
      auto it = prints[node]->find(flag);
      const std::string value = it == prints[node]->end() ? "unset" : it->second;
      auto same = std::find_if(values.begin(), values.end(), [&](const auto& v) { return v.first == value; });
      if (same == values.end()) same = values.insert(values.end(), {value, {}});
      for (int r : config.node_ranks(node)) same->second.push_back(r);
    }
    if (values.size() < 2) continue;
    out += cat(out.empty() ? "" : "; ", flag, ":");
    for (size_t i = 0; i < values.size(); ++i)
      out += cat(i == 0 ? " " : ", ", values[i].first, " on ", config.describe_ranks(values[i].second));
  }
  return out;
}

}  // namespace

void join_nodes(TcpStore& store, const ParallelConfig& config, const Fingerprint& fingerprint) {
  const ParallelFlags& f = config.flags();
  Fingerprint mine = fingerprint;
  mine["--tp-size"] = std::to_string(f.tp_size);
  mine["--dp-size"] = std::to_string(f.dp_size);
  mine["--enable-dp-attention"] = f.enable_dp_attention ? "true" : "false";
  mine["--ep-size"] = std::to_string(f.ep_size);
  mine["--moe-a2a-backend"] = moe_a2a_backend_name(f.moe_a2a_backend);
  mine["--deepep-mode"] = deepep_mode_name(f.deepep_mode);
  mine["--nnodes"] = std::to_string(f.nnodes);
  mine["--dist-timeout"] = cat(f.dist_timeout_s);
  const int node = config.node_rank();
  const std::string claims_key = cat("join/claims/", node);
  NW_CHECK(store.add(claims_key, 1) == 1, "--node-rank ", node, " was given to more than one process joining ",
           store.address());
  store.set(join_key(node), json(mine).dump());

  std::vector<std::string> keys;
  for (int n = 0; n < config.nnodes(); ++n) keys.push_back(join_key(n));
  const std::vector<std::string> missing = store.wait(keys, config.timeout_s());
  std::vector<std::optional<Fingerprint>> prints(config.nnodes());
  std::vector<int> absent;
  for (int n = 0; n < config.nnodes(); ++n) {
    if (std::find(missing.begin(), missing.end(), join_key(n)) != missing.end()) {
      for (int r : config.node_ranks(n)) absent.push_back(r);
      continue;
    }
    prints[n] = json::parse(store.get(join_key(n))).get<Fingerprint>();
  }
  // A doubled --node-rank or other flags come first: either may be why a node never came (a mistyped
  // --node-rank, a different --nnodes).
  const std::string claims = store.get(claims_key);
  NW_CHECK(claims == "1", "--node-rank ", node, " was given to ", claims, " processes joining ", store.address());
  const std::string differ = differences(prints, config);
  NW_CHECK(differ.empty(), "flags differ between nodes: ", differ);
  NW_CHECK(absent.empty(), config.describe_ranks(absent), " did not join ", store.address(), " within ",
           config.timeout_s(), " s");
}

void announce_failure(TcpStore& store, int node, const std::string& message) {
  store.set(failure_key(node), message);
  store.add(kFailures, 1);
}

std::string announced_failure(TcpStore& store, int node) { return store.try_get(failure_key(node)).value_or(""); }

NodeWatchdog::NodeWatchdog(TcpStore& store, const ParallelConfig& config,
                           std::function<void(const std::string&)> on_loss, double interval_s)
    : thread_([this, &store, config, on_loss = std::move(on_loss), interval_s] {
        watch(store, config, on_loss, interval_s);
      }) {}

NodeWatchdog::~NodeWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void NodeWatchdog::watch(TcpStore& store, const ParallelConfig& config,
                         const std::function<void(const std::string&)>& on_loss, double interval_s) {
  const auto interval = std::chrono::duration<double>(interval_s);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (cv_.wait_for(lock, interval, [this] { return stop_; })) return;
    }
    std::string loss;
    try {
      std::vector<int> ranks;
      for (int node : store.lost_clients())
        for (int r : config.node_ranks(node)) ranks.push_back(r);
      if (!ranks.empty())
        loss = cat(config.describe_ranks(ranks), " left the world without a goodbye: the process exited or crashed, ",
                   "or the network to it failed");
      for (int node = 0; loss.empty() && store.add(kFailures, 0) > 0 && node < config.nnodes(); ++node) {
        const std::string failure = node == config.node_rank() ? "" : announced_failure(store, node);
        if (!failure.empty()) loss = cat("node ", node, " stopped: ", failure);
      }
    } catch (const Error& e) {
      loss = e.what();
    }
    if (!loss.empty()) {
      on_loss(loss);
      return;
    }
  }
}

}  // namespace narwhal
