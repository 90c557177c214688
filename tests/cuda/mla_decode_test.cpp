// GPU MLA decode (absorbed MQA over the paged 576-wide latent cache, split-KV) against the CPU reference
// ops::mla_attention_absorbed, on ragged batches with batch padding (seq_len 0), q_len 1 to 8 (verifies, causal or a
// draft tree's mask), 4, 16 and 128 heads.
//
// The CPU reference runs with W_UK = W_UV = identity (nope = v = kv_lora = 512), so its q is exactly the
// kernel's absorbed query [q_latent | q_pe] and its output exactly the kernel's latent output: the comparison
// checks the kernel's function alone. Tolerance: both read the same BF16-exact q and cache; the kernel rounds P
// to BF16 before P V (relative 2^-9 per weight, averaging out over the keys) and its output to BF16 (2^-8 of
// max|ref| at most); FP32 accumulation order and exp2 vs exp differ by ~1e-6. Bound: rel <= 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "ops/attention.h"
#include "ops/cuda/mla.h"

namespace narwhal {
namespace {

using testing::random_bf16;

constexpr double kTolerance = 1e-2;
constexpr int64_t kLora = 512, kRope = 64, kWidth = kLora + kRope;

struct DecodeCase {
  int64_t heads, q_len, page_size;
  std::vector<int64_t> seq_lens;  // keys per sequence including the q_len new ones; 0 = batch padding
  uint64_t seed;
  std::vector<int32_t> parents = {};  // per sequence q_len entries: a draft tree's parents; empty: causal
};

void check_decode(const DecodeCase& c) {
  const int64_t batch = static_cast<int64_t>(c.seq_lens.size()), heads = c.heads, rows = batch * c.q_len;
  const float scale = 1.0f / std::sqrt(192.0f);
  const testing::ScatteredPages pages = testing::scattered_pages(c.seq_lens, c.page_size, c.seed);
  auto cache = random_bf16({pages.pool_pages, c.page_size, kWidth}, c.seed + 1);
  auto q = random_bf16({rows, heads, kWidth}, c.seed + 2);

  // Identity kv_b: per head W_UK = W_UV = I [512, 512].
  Tensor kv_b = Tensor::zeros(DType::kF32, {heads * 2 * kLora, kLora});
  for (int64_t h = 0; h < heads * 2; ++h)
    for (int64_t i = 0; i < kLora; ++i) kv_b.f32()[(h * kLora + i) * kLora + i] = 1.0f;
  std::vector<ops::MlaSequence> seqs;
  for (int64_t b = 0; b < batch; ++b)
    if (c.seq_lens[b] > 0)
      seqs.push_back({b * c.q_len, c.seq_lens[b] - c.q_len, c.q_len, &pages.table[b * pages.max_pages],
                      c.parents.empty() ? nullptr : &c.parents[static_cast<size_t>(b * c.q_len)]});
  Tensor reference = Tensor::zeros(DType::kF32, {rows, heads, kLora});  // padding sequences: zeros
  const ops::MlaShape shape{heads, kLora, kRope, kLora, kLora, scale};
  ops::mla_attention_absorbed(q.host, kv_b, ops::LatentCache{cache.host, c.page_size}, seqs.data(),
                              static_cast<int64_t>(seqs.size()), shape, reference);

  std::vector<int32_t> lens(c.seq_lens.begin(), c.seq_lens.end());
  ops::cuda::MlaDecodeParams params;
  params.heads = heads;
  params.q_len = c.q_len;
  params.softmax_scale = scale;
  params.page_size = c.page_size;
  int device = 0, sms = 0;
  NW_CUDA_CHECK(cudaGetDevice(&device));
  NW_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const size_t workspace_bytes = ops::cuda::mla_decode_workspace_bytes(batch, params, sms);
  Tensor workspace = testing::poisoned(DType::kF32, {static_cast<int64_t>(workspace_bytes / 4) + 1});
  Tensor out = testing::poisoned(DType::kBF16, {rows, heads, kLora});
  ops::cuda::mla_decode(q.device, cache.device, testing::device_i32(pages.table, {batch, pages.max_pages}),
                        testing::device_i32(lens, {batch}),
                        c.parents.empty() ? Tensor{} : testing::device_i32(c.parents, {rows}), params, out,
                        workspace.data, workspace_bytes, nullptr);
  NW_CUDA_CHECK(cudaDeviceSynchronize());
  std::string lens_text;
  for (int64_t len : c.seq_lens) lens_text += " " + std::to_string(len);
  testing::expect_close(out, reference,
                        kTolerance, "mla_decode heads " + std::to_string(heads) + " q_len " + std::to_string(c.q_len) +
                                        " page " + std::to_string(c.page_size) + " seq_lens" + lens_text);
}

// Lengths straddle page and 64-key tile boundaries (1, 63, 64, 65, 129), padding rows (0) sit between real
// ones, and one long sequence among short ones makes the split-KV cut sequences into parts and combine them.
TEST(CudaMlaDecode, V2LiteHeadsQLen1Page64) {
  NW_REQUIRE_GPU();
  check_decode({16, 1, 64, {1, 63, 0, 64, 65, 129, 3000}, 101});
}

TEST(CudaMlaDecode, V2LiteHeadsQLen2Page16) {
  NW_REQUIRE_GPU();
  check_decode({16, 2, 16, {2, 17, 0, 1000, 64, 65}, 102});
}

TEST(CudaMlaDecode, V3RankHeadsQLen1ManySequences) {
  NW_REQUIRE_GPU();
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < 67; ++b) lens.push_back(b == 5 ? 0 : 1 + (b * 37) % 700);
  check_decode({16, 1, 64, lens, 103});
}

TEST(CudaMlaDecode, V3HeadsQLen1) {
  NW_REQUIRE_GPU();
  check_decode({128, 1, 64, {1, 0, 200, 2049, 77}, 104});
}

TEST(CudaMlaDecode, V3HeadsQLen2Page16) {
  NW_REQUIRE_GPU();
  check_decode({128, 2, 16, {2, 513, 0, 31}, 105});
}

// A speculative verify's largest shape (the pending token and 3 drafts): 4 heads (the trained tiny model's, 16 rows a
// sequence), 16 and 128 heads (64 and 512 rows), lengths from one verify's 4 keys up, across pages of 16.
TEST(CudaMlaDecode, VerifyQLen4) {
  NW_REQUIRE_GPU();
  check_decode({4, 4, 16, {4, 19, 0, 64, 300}, 109});
  check_decode({16, 4, 16, {5, 1000, 0, 67}, 110});
  check_decode({128, 4, 64, {4, 513, 130}, 111});
}

// The longest verifies the GPU takes (--speculative-num-steps 4 and 7): 5 and 8 rows a sequence, 40 to 1024 query rows
// (128 heads x 8: sixteen 64-row blocks), causal among themselves.
TEST(CudaMlaDecode, VerifyQLen5And8) {
  NW_REQUIRE_GPU();
  check_decode({4, 5, 16, {5, 21, 0, 64, 300}, 112});
  check_decode({16, 8, 16, {8, 1000, 0, 67, 9}, 113});
  check_decode({128, 8, 64, {8, 513, 130}, 114});
}

// Draft trees (--speculative-eagle-topk): a verify's tree of 7 (the pending token, 2 children, 4 grandchildren), and a
// draft round's 8 candidates of 2 roots, per sequence; a padding sequence's entries are never read. Lengths cross a
// 64-key tile inside the tree and split long sequences over parts.
TEST(CudaMlaDecode, DraftTreeMasks) {
  NW_REQUIRE_GPU();
  const std::vector<int32_t> verify = {-1, 0, 0, 1, 1, 2, 2};
  std::vector<int32_t> parents;
  for (int i = 0; i < 4; ++i) parents.insert(parents.end(), verify.begin(), verify.end());
  check_decode({16, 7, 16, {7, 68, 0, 2000}, 115, parents});
  const std::vector<int32_t> round = {-1, -1, 0, 1, 2, 2, 3, 5};
  parents.clear();
  for (int i = 0; i < 3; ++i) parents.insert(parents.end(), round.begin(), round.end());
  check_decode({128, 8, 64, {8, 130, 5000}, 116, parents});
  check_decode({4, 8, 16, {70, 0, 9}, 117, parents});
}

// Batch 1 as the decode benchmark runs it: fewer tiles (17) than the grid has parts, so one part per tile
// works; and a sequence longer than the parts (313 tiles), so parts hold several tiles each.
TEST(CudaMlaDecode, SingleSequenceFewerTilesThanParts) {
  NW_REQUIRE_GPU();
  check_decode({16, 1, 64, {1040}, 107});
  check_decode({16, 1, 64, {20000}, 108});
}

TEST(CudaMlaDecode, SingleSequenceOfOneToken) {
  NW_REQUIRE_GPU();
  check_decode({16, 1, 64, {1}, 106});
}

}  // namespace
}  // namespace narwhal
