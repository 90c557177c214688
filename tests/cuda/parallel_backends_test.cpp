// The device backends against the serial host reference: device-local with 2, 4 and 8 ranks on one GPU (every
// collective, the split groups, V3's per-rank shapes at TP 8) and NCCL with a rank per visible GPU (every
// collective, groups, an all_reduce captured in a CUDA graph). Skipped without GPUs; NCCL needs two or more.
#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "parallel/collective_checks.h"
#include "parallel/parallel_test_util.h"
#include "parallel/process_world.h"

namespace narwhal {
namespace {

using testing::CollectiveHarness;

// fn(config, world, stream) on every rank, each with its own stream; "" or the world's error.
std::string run_on(const ParallelFlags& flags, Backend backend,
                   const std::function<void(const ParallelConfig&, Communicator&, cudaStream_t)>& fn) {
  try {
    run_ranks(flags, [&](const ParallelConfig& config, Communicator& world) {
      cudaStream_t stream = nullptr;
      NW_CUDA_CHECK(cudaStreamCreate(&stream));
      try {
        fn(config, world, stream);
      } catch (...) {
        cudaStreamDestroy(stream);
        throw;
      }
      NW_CUDA_CHECK(cudaStreamDestroy(stream));
    }, backend);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ParallelFlags tp_flags(int tp, int dp = 1, int ep = 1) { return testing::parallel_flags(tp, dp, ep, 120); }

class DeviceLocal : public ::testing::TestWithParam<int> {};

TEST_P(DeviceLocal, EveryCollectiveAndGroupMatchesTheHostReferenceExactly) {
  NW_REQUIRE_GPU();
  const int ranks = GetParam();
  EXPECT_EQ(run_on(tp_flags(ranks, 2, ranks / 2), Backend::kDeviceLocal,
                   [](const ParallelConfig& config, Communicator& world, cudaStream_t stream) {
                     testing::check_all_collectives(CollectiveHarness(world, stream, true));
                     testing::check_groups(world, config, stream, true);
                   }),
            "");
}

INSTANTIATE_TEST_SUITE_P(Ranks, DeviceLocal, ::testing::Values(2, 4, 8));

TEST(DeviceLocal, DeepSeekV3ShapesAtTp8) {
  // One decode step's TP traffic at TP 8: the hidden-state all_reduce [tokens, 7168] in BF16, and the all_gather
  // of each rank's 16 heads x 128 values of attention output.
  NW_REQUIRE_GPU();
  EXPECT_EQ(run_on(tp_flags(8), Backend::kDeviceLocal,
                   [](const ParallelConfig& config, Communicator& world, cudaStream_t stream) {
                     const CollectiveHarness h(world, stream, true);
                     std::vector<Tensor> inputs;
                     for (int r = 0; r < 8; ++r) inputs.push_back(testing::test_input(DType::kBF16, {64, 7168}, r, 1));
                     Tensor hidden = h.to_comm(inputs[config.rank()]);
                     world.all_reduce(hidden, hidden, stream);
                     h.expect(hidden, testing::rank_order_sum(inputs), "hidden all_reduce", true);
                     std::vector<Tensor> heads;
                     for (int r = 0; r < 8; ++r) heads.push_back(testing::test_input(DType::kBF16, {64, 16 * 128}, r, 2));
                     Tensor gathered = h.poisoned(DType::kBF16, {8 * 64, 16 * 128});
                     world.all_gather(h.to_comm(heads[config.rank()]), gathered, stream);
                     h.expect(gathered, testing::stack_rows(heads), "heads all_gather");
                   }),
            "");
}

TEST(Nccl, EveryCollectiveAndGroupOnEveryGpu) {
  NW_REQUIRE_GPU();
  const int gpus = testing::gpu_count();
  if (gpus < 2) GTEST_SKIP() << "NCCL needs a GPU per rank; this machine has " << gpus;
  const int ranks = gpus % 2 ? gpus - 1 : gpus;
  EXPECT_EQ(run_on(tp_flags(ranks, 2, ranks / 2), Backend::kNccl,
                   [](const ParallelConfig& config, Communicator& world, cudaStream_t stream) {
                     testing::check_all_collectives(CollectiveHarness(world, stream, false));
                     testing::check_groups(world, config, stream, false);
                   }),
            "");
}

TEST(Nccl, AllReduceCapturedInACudaGraph) {
  NW_REQUIRE_GPU();
  const int gpus = testing::gpu_count();
  if (gpus < 2) GTEST_SKIP() << "NCCL needs a GPU per rank; this machine has " << gpus;
  EXPECT_EQ(run_on(tp_flags(gpus), Backend::kNccl,
                   [&](const ParallelConfig& config, Communicator& world, cudaStream_t stream) {
                     const CollectiveHarness h(world, stream, false);
                     Tensor buffer = h.poisoned(DType::kF32, {4096});
                     world.all_reduce(buffer, buffer, stream);  // NCCL connects its peers on first use, not in capture
                     cudaGraph_t graph = nullptr;
                     cudaGraphExec_t exec = nullptr;
                     NW_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
                     world.all_reduce(buffer, buffer, stream);
                     NW_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
                     NW_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
                     for (int replay = 0; replay < 3; ++replay) {  // new inputs in the same buffer each time
                       std::vector<Tensor> inputs;
                       for (int r = 0; r < gpus; ++r) inputs.push_back(testing::test_input(DType::kF32, {4096}, r, replay));
                       NW_CUDA_CHECK(cudaMemcpy(buffer.data, inputs[config.rank()].data, buffer.nbytes(),
                                                cudaMemcpyHostToDevice));
                       NW_CUDA_CHECK(cudaGraphLaunch(exec, stream));
                       h.expect(buffer, testing::rank_order_sum(inputs), cat("replay ", replay), true);
                     }
                     NW_CUDA_CHECK(cudaGraphExecDestroy(exec));
                     NW_CUDA_CHECK(cudaGraphDestroy(graph));
                   }),
            "");
}

}  // namespace
}  // namespace narwhal
