// GPU MoE dispatch (deepep's layout, pack and combine kernels) against the CPU reference ops: bit for bit, since
// they move bytes and the combine adds the same BF16 rows in F32 in the same rank order on both sides. Shapes from
// an empty slice to several scan chunks (T 0 .. 513), 2 to 16 ranks, top-k 6 and 8, hidden 128 to V3's 7168,
// a scattered placement table, invalid ids (-1 and past E), both block layouts (packed and fixed capacity). Outputs
// start poisoned, so a row a kernel should have written and did not fails; arguments it does not take are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "core/error.h"
#include "cuda/gpu_test_util.h"
#include "ops/cuda/moe_dispatch.h"
#include "ops/moe_dispatch.h"

namespace narwhal {
namespace {

using testing::device_i32;
using testing::poisoned;
using testing::random_bf16;

struct DispatchCase {
  int64_t tokens, hidden;
  int ranks, top_k, experts, self;
};

std::vector<int32_t> host_i32(const Tensor& device) {
  const Tensor t = device.to(Device::kCPU);
  return {t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel()};
}

bool same_bytes(const void* a, const void* b, size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

void check_dispatch(const DispatchCase& c, uint64_t seed) {
  const std::string what = cat("T ", c.tokens, " H ", c.hidden, " N ", c.ranks, " k ", c.top_k, " E ", c.experts);
  SCOPED_TRACE(what);
  std::mt19937_64 rng(seed);
  // A placement that scatters each rank's experts over the ids.
  std::vector<int32_t> rank_of(c.experts);
  for (int e = 0; e < c.experts; ++e) rank_of[e] = e % c.ranks;
  std::shuffle(rank_of.begin(), rank_of.end(), rng);
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int32_t> pool(c.experts);
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int j = 0; j < c.top_k; ++j) {
      const uint64_t r = rng() % 17;
      ids.push_back(r == 0 ? -1 : r == 1 ? c.experts + 3 : pool[j]);
      weights.push_back(static_cast<float>(rng() % 1000) / 997.0f);
    }
  }
  const Tensor ids_host = Tensor::zeros(DType::kI32, {c.tokens, c.top_k});
  std::copy(ids.begin(), ids.end(), ids_host.ptr<int32_t>());
  const Tensor weights_host = Tensor::from_floats(weights, {c.tokens, c.top_k});
  const Tensor rank_host = Tensor::zeros(DType::kI32, {c.experts});
  std::copy(rank_of.begin(), rank_of.end(), rank_host.ptr<int32_t>());
  const Tensor ids_dev = ids_host.to(Device::kCUDA), weights_dev = weights_host.to(Device::kCUDA);
  const Tensor rank_dev = rank_host.to(Device::kCUDA);
  const int64_t n = c.ranks, t = c.tokens;

  Tensor counts = Tensor::zeros(DType::kI32, {n}), slot = Tensor::zeros(DType::kI32, {t, n});
  Tensor token = Tensor::zeros(DType::kI32, {n, t});
  ops::moe_dispatch_layout(ids_host, rank_host, c.self, counts, slot, token);
  Tensor d_counts = poisoned(DType::kI32, {n}), d_slot = poisoned(DType::kI32, {t, n});
  Tensor d_token = poisoned(DType::kI32, {n, t});
  ops::cuda::moe_dispatch_layout(ids_dev, rank_dev, c.self, d_counts, d_slot, d_token, nullptr);
  const std::vector<int32_t> got_counts = host_i32(d_counts), got_slot = host_i32(d_slot);
  const std::vector<int32_t> got_token = host_i32(d_token);
  ASSERT_TRUE(same_bytes(got_counts.data(), counts.data, counts.nbytes()));
  EXPECT_TRUE(same_bytes(got_slot.data(), slot.data, slot.nbytes()));
  for (int64_t d = 0; d < n; ++d)
    EXPECT_TRUE(same_bytes(got_token.data() + d * t, token.ptr<int32_t>() + d * t, counts.ptr<int32_t>()[d] * 4))
        << "destination " << d;

  const auto x = random_bf16({t, c.hidden}, seed + 1);
  const Tensor x_bf16 = x.device.to(Device::kCPU);
  const int64_t packed_rows = std::accumulate(counts.ptr<int32_t>(), counts.ptr<int32_t>() + n, int64_t{0});
  for (const int64_t capacity : {int64_t{0}, t + 3}) {
    SCOPED_TRACE(cat("capacity ", capacity));
    const int64_t rows = capacity > 0 ? n * capacity : packed_rows;
    Tensor send_x = Tensor::zeros(DType::kBF16, {rows, c.hidden});
    Tensor send_ids = Tensor::zeros(DType::kI32, {rows, c.top_k}), send_w = Tensor::zeros(DType::kF32, {rows, c.top_k});
    ops::moe_dispatch_pack(x_bf16, ids_host, weights_host, rank_host, counts, token, capacity, send_x, send_ids,
                           send_w);
    Tensor d_x = poisoned(DType::kBF16, {rows, c.hidden}), d_ids = poisoned(DType::kI32, {rows, c.top_k});
    Tensor d_w = poisoned(DType::kF32, {rows, c.top_k});
    ops::cuda::moe_dispatch_pack(x.device, ids_dev, weights_dev, rank_dev, d_counts, d_token, capacity, d_x, d_ids,
                                 d_w, nullptr);
    const Tensor got_x = d_x.to(Device::kCPU), got_ids = d_ids.to(Device::kCPU), got_w = d_w.to(Device::kCPU);
    EXPECT_TRUE(same_bytes(got_ids.data, send_ids.data, send_ids.nbytes())) << "ids, padding included";
    EXPECT_TRUE(same_bytes(got_w.data, send_w.data, send_w.nbytes())) << "weights, padding included";
    const size_t row_bytes = static_cast<size_t>(c.hidden) * 2;
    int64_t start = 0;
    for (int64_t d = 0; d < n; ++d) {
      const int64_t count = counts.ptr<int32_t>()[d], first = capacity > 0 ? d * capacity : start;
      EXPECT_TRUE(same_bytes(static_cast<char*>(got_x.data) + first * row_bytes,
                             static_cast<char*>(send_x.data) + first * row_bytes, count * row_bytes))
          << "rows of destination " << d;
      start += count;
    }

    const auto returned = random_bf16({rows, c.hidden}, seed + 2 + capacity);
    Tensor out = Tensor::zeros(DType::kBF16, {t, c.hidden});
    ops::moe_dispatch_combine(returned.device.to(Device::kCPU), slot, counts, capacity, out);
    Tensor d_out = poisoned(DType::kBF16, {t, c.hidden});
    ops::cuda::moe_dispatch_combine(returned.device, d_slot, d_counts, capacity, d_out, nullptr);
    const Tensor got_out = d_out.to(Device::kCPU);
    EXPECT_TRUE(same_bytes(got_out.data, out.data, out.nbytes())) << "combined rows";
  }
}

TEST(CudaMoeDispatch, KernelsEqualTheCpuReference) {
  NW_REQUIRE_GPU();
  const DispatchCase cases[] = {{0, 128, 2, 8, 16, 0},  {1, 7168, 4, 8, 256, 3},  {37, 1024, 8, 8, 64, 5},
                                {300, 2048, 2, 6, 64, 1}, {513, 256, 16, 8, 256, 9}, {64, 7168, 8, 8, 256, 0}};
  uint64_t seed = 40;
  for (const DispatchCase& c : cases) check_dispatch(c, seed++);
}

TEST(CudaMoeDispatch, RefusesWhatItDoesNotTake) {
  NW_REQUIRE_GPU();
  const Tensor ids = device_i32(std::vector<int32_t>(4 * 2, 0), {4, 2}), rank = device_i32({0, 1}, {2});
  Tensor slot = poisoned(DType::kI32, {4, 300}), token = poisoned(DType::kI32, {300, 4});
  Tensor many = poisoned(DType::kI32, {300});
  EXPECT_THROW(ops::cuda::moe_dispatch_layout(ids, rank, 0, many, slot, token, nullptr), Error) << "300 ranks";
  Tensor counts = poisoned(DType::kI32, {2}), slot2 = poisoned(DType::kI32, {4, 2});
  Tensor token2 = poisoned(DType::kI32, {2, 4});
  EXPECT_THROW(ops::cuda::moe_dispatch_layout(ids, rank, 2, counts, slot2, token2, nullptr), Error) << "self 2 of 2";
  const Tensor x_f32 = poisoned(DType::kF32, {4, 128}), weights = poisoned(DType::kF32, {4, 2});
  Tensor send_x = poisoned(DType::kBF16, {8, 128}), send_ids = poisoned(DType::kI32, {8, 2});
  Tensor send_w = poisoned(DType::kF32, {8, 2});
  try {
    ops::cuda::moe_dispatch_pack(x_f32, ids, weights, rank, counts, token2, 4, send_x, send_ids, send_w, nullptr);
    ADD_FAILURE() << "F32 rows were packed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda::moe_dispatch_pack: x is F32"), std::string::npos) << e.what();
  }
  const Tensor odd = poisoned(DType::kBF16, {4, 100});
  Tensor out = poisoned(DType::kBF16, {4, 100});
  EXPECT_THROW(ops::cuda::moe_dispatch_combine(odd, slot2, counts, 0, out, nullptr), Error) << "hidden 100";
}

}  // namespace
}  // namespace narwhal
