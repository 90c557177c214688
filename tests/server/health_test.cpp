// Health: when the engine counts as alive.
#include "server/health.h"

#include <gtest/gtest.h>

namespace narwhal::server {
namespace {

TEST(EngineProblem, AliveOnlyWhileTheLoopRunsAndBeats) {
  EngineStats stats;
  const int64_t now = 100'000'000'000;
  stats.heartbeat_ns = now;
  ASSERT_TRUE(engine_problem(stats, now, 20.0).has_value()) << "a loop that never started is not alive";
  EXPECT_NE(engine_problem(stats, now, 20.0)->find("not running"), std::string::npos);
  stats.loop_running = true;
  EXPECT_FALSE(engine_problem(stats, now, 20.0).has_value());
  EXPECT_FALSE(engine_problem(stats, now + 19'000'000'000, 20.0).has_value()) << "a long step is not a stall";
  const auto stuck = engine_problem(stats, now + 21'000'000'000, 20.0);
  ASSERT_TRUE(stuck.has_value());
  EXPECT_NE(stuck->find("21 s"), std::string::npos) << *stuck;
}

}  // namespace
}  // namespace narwhal::server
