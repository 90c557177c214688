// The host backend with thread ranks: every collective against the serial reference (bit-identical on every
// rank), split groups, argument errors, ranks that disagree, a rank that fails and one that never comes.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "parallel/collective_checks.h"
#include "parallel/nccl_library.h"
#include "parallel/process_world.h"

namespace narwhal {
namespace {

using testing::check_all_collectives;
using testing::check_groups;
using testing::CollectiveHarness;

// run_ranks' error, or "" when every rank finished.
std::string run_error(int world, const RankFn& fn, double timeout_s = 30) {
  try {
    run_ranks(world, fn, Backend::kHost, timeout_s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class HostCollectives : public ::testing::TestWithParam<int> {};

TEST_P(HostCollectives, MatchTheSerialReferenceOnEveryRank) {
  EXPECT_EQ(run_error(GetParam(),
                      [](const ParallelConfig&, Communicator& world) {
                        check_all_collectives(CollectiveHarness(world, nullptr, true));
                      }),
            "");
}

INSTANTIATE_TEST_SUITE_P(Ranks, HostCollectives, ::testing::Values(1, 2, 3, 4));

TEST(HostGroups, SplitsMatchParallelConfig) {
  for (const auto& [tp, dp, dp_attention, ep] : {std::tuple{2, 2, false, 1}, std::tuple{4, 2, true, 4},
                                                 std::tuple{4, 1, false, 2}, std::tuple{6, 3, true, 3},
                                                 std::tuple{4, 2, true, 2}}) {
    ParallelFlags flags;
    flags.tp_size = tp;
    flags.dp_size = dp;
    flags.enable_dp_attention = dp_attention;
    flags.ep_size = ep;
    flags.dist_timeout_s = 30;
    SCOPED_TRACE(cat("tp ", tp, " dp ", dp, " dp_attention ", dp_attention, " ep ", ep));
    EXPECT_NO_THROW(run_ranks(flags, [](const ParallelConfig& config, Communicator& world) {
      check_groups(world, config, nullptr, true);
    }));
  }
}

TEST(HostGroups, TpGroupsInsideDpRunEveryCollective) {
  ParallelFlags flags;
  flags.tp_size = 3;
  flags.dp_size = 2;  // two TP-3 groups, working at once
  EXPECT_NO_THROW(run_ranks(flags, [](const ParallelConfig& config, Communicator& world) {
    ParallelGroups groups = split_groups(world, config);
    check_all_collectives(CollectiveHarness(*groups.tp, nullptr, true));
    EXPECT_EQ(world.split(-1, 0, "none"), nullptr);
  }));
}

TEST(HostCollectives, ArgumentErrorsNameTheCall) {
  run_ranks(1, [](const ParallelConfig&, Communicator& c) {
    auto message = [](const std::function<void()>& call) {
      try {
        call();
      } catch (const Error& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    };
    Tensor f32 = Tensor::zeros(DType::kF32, {4, 2});
    Tensor f16 = Tensor::zeros(DType::kF16, {4, 2});
    Tensor on_gpu = Tensor::view(f32.data, DType::kF32, {4, 2});
    on_gpu.device = Device::kCUDA;
    EXPECT_EQ(message([&] { c.all_reduce(f16, f16); }),
              "world all_reduce (rank 0 of 1): sums F32, BF16 or I32 into the same dtype, got F16 into F16");
    EXPECT_EQ(message([&] { c.all_reduce(on_gpu, on_gpu); }),
              "world all_reduce (rank 0 of 1): in is a CUDA tensor, but this communicator's tensors live on the CPU");
    EXPECT_NE(message([&] { c.all_gather(f32, Tensor::zeros(DType::kF32, {3, 2})); }).find("should have 1 x 4 rows"),
              std::string::npos);
    EXPECT_NE(message([&] { c.all_gather(f32, Tensor::zeros(DType::kF32, {4, 3})); }).find("rows of in [4, 2]"),
              std::string::npos);
    EXPECT_NE(message([&] { c.all_to_all(f32, {3}, Tensor::zeros(DType::kF32, {4, 2}), {4}); })
                  .find("send counts add up to 3 rows, in has 4"),
              std::string::npos);
    EXPECT_NE(message([&] { c.all_to_all(f32, {4}, f32, {4}); }).find("in and out overlap"), std::string::npos);
    EXPECT_NE(message([&] { c.broadcast(f32, 1); }).find("root 1 is not a rank"), std::string::npos);
    EXPECT_EQ(message([&] { c.all_reduce(f32, Tensor::zeros(DType::kF32, {2, 4})); }),
              "world all_reduce (rank 0 of 1): in [4, 2] and out [2, 4] differ");
  });
}

TEST(HostCollectives, RanksThatDisagreeAreNamed) {
  const std::string order = run_error(2, [](const ParallelConfig& config, Communicator& c) {
    Tensor t = Tensor::zeros(DType::kF32, {4});
    if (config.rank() == 0) c.all_reduce(t, t);
    else c.broadcast(t, 0);
  });
  // Either rank may notice first; both name both calls.
  EXPECT_NE(order.find("world broadcast F32 [4] from rank 0 #1"), std::string::npos) << order;
  EXPECT_NE(order.find("world all_reduce F32 [4] #1"), std::string::npos) << order;
  EXPECT_NE(order.find("the ranks called collectives in a different order or with different arguments"),
            std::string::npos);

  const std::string shapes = run_error(2, [](const ParallelConfig& config, Communicator& c) {
    Tensor t = Tensor::zeros(DType::kBF16, {config.rank() + 4, 2});
    c.all_reduce(t, t);
  });
  EXPECT_NE(shapes.find("all_reduce BF16 [5, 2]"), std::string::npos) << shapes;

  const std::string counts = run_error(2, [](const ParallelConfig& config, Communicator& c) {
    Tensor in = Tensor::zeros(DType::kF32, {3, 2});
    Tensor out = Tensor::zeros(DType::kF32, {config.rank() == 0 ? 4 : 3, 2});
    // rank 0 expects 2 rows from rank 1, which sends it 1.
    c.all_to_all(in, config.rank() == 0 ? std::vector<int64_t>{2, 1} : std::vector<int64_t>{1, 2}, out,
                 config.rank() == 0 ? std::vector<int64_t>{2, 2} : std::vector<int64_t>{1, 2});
  });
  EXPECT_NE(counts.find("rank 1 sends 8 bytes where this rank expects 16"), std::string::npos) << counts;
}

TEST(HostCollectives, AFailingRankEndsTheOthersWaitsAtOnce) {
  const auto start = std::chrono::steady_clock::now();
  const std::string error = run_error(
      4,
      [](const ParallelConfig& config, Communicator& c) {
        Tensor t = Tensor::zeros(DType::kF32, {16});
        c.all_reduce(t, t);
        if (config.rank() == 2) throw Error("boom");
        for (int i = 0; i < 100; ++i) c.all_reduce(t, t);
      },
      30);
  EXPECT_EQ(error, "rank 2 failed: boom");
  EXPECT_LT(seconds_since(start), 5.0) << "the others waited for the timeout";
}

TEST(HostCollectives, ARankThatNeverComesIsNamedAtTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const std::string error = run_error(
      3,
      [](const ParallelConfig& config, Communicator& c) {
        if (config.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1500));
          return;  // never calls the barrier
        }
        c.barrier();
      },
      0.5);
  EXPECT_NE(error.find("world barrier (rank "), std::string::npos) << error;
  EXPECT_NE(error.find(": rank 1 did not get there within 0.5 s"), std::string::npos) << error;
  EXPECT_LT(seconds_since(start), 5.0);
}

TEST(NcclLibrary, ToolkitNcclHasEverySymbol) {
  // CI compiles against the toolkit's NCCL without a GPU: loading it and resolving every symbol needs none.
  try {
    const NcclLibrary& nccl = NcclLibrary::get();
    EXPECT_GE(nccl.version, 21800) << nccl.path;
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
}

}  // namespace
}  // namespace narwhal
