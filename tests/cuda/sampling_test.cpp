// GPU sampler against the CPU sampler, token for token: every parameter combination in mixed batches of 1 .. 300
// rows, several seeds, V = 1000 .. 129,280 (and odd sizes), logits random, BF16-tied, flat, near-flat, peaked and
// with NaN / -inf; logprobs within 1e-5. Prints the time of one call (B = 256, V = 129,280) for docs/performance.md.
#include "ops/cuda/sampling.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <string>

#include "core/cuda_check.h"
#include "core/error.h"
#include "cuda/gpu_test_util.h"
#include "ops/sampling.h"

namespace narwhal {
namespace {

using ops::SamplingRow;
using ops::TokenAdjustment;

constexpr int kStyles = 7;

// Row logits in one of kStyles shapes: N(0, 1) and N(0, 3) floats; BF16-rounded N(0, 2) (many exact ties); all
// equal; near-flat (weights crowd one narrow band, so the selection needs refinement passes); peaked (one token far
// ahead, a few close behind); N(0, 1) with NaN and -inf entries.
void fill_row(float* row, int64_t vocab, int style, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < vocab; ++i) {
    const float z = normal(rng);
    switch (style) {
      case 0: row[i] = z; break;
      case 1: row[i] = 3.0f * z; break;
      case 2: row[i] = bf16_to_float(float_to_bf16(2.0f * z)); break;
      case 3: row[i] = 0.5f; break;
      case 4: row[i] = 1.0f + 1e-3f * z; break;
      default: row[i] = z;
    }
  }
  if (style == 5) {
    row[rng() % vocab] = 15.0f;
    for (int j = 0; j < 5; ++j) row[rng() % vocab] = 13.0f + j * 0.25f;
  }
  if (style == 6)
    for (int j = 0; j < 8; ++j) row[rng() % vocab] = j % 2 ? std::nanf("") : -INFINITY;
}

// [rows, vocab] logits, row i of style style_of(i).
template <typename StyleOf>
Tensor random_logits(int64_t rows, int64_t vocab, std::mt19937_64& rng, StyleOf style_of) {
  Tensor logits = Tensor::zeros(DType::kF32, {rows, vocab});
  for (int64_t i = 0; i < rows; ++i) fill_row(logits.f32() + i * vocab, vocab, style_of(i), rng);
  return logits;
}

constexpr int kCombos = 12;
const char* const kComboNames[kCombos] = {"greedy", "temperature", "top-k", "top-p", "min-p", "top-k+top-p+min-p",
                                          "penalties", "logit_bias", "masks", "logprobs 0", "logprobs 5",
                                          "logprobs 20"};

template <typename T>
T pick(std::mt19937_64& rng, std::initializer_list<T> values) {
  return values.begin()[rng() % values.size()];
}

// A row of combination `combo` reading logits row `logits_row`; its adjustments go to `adjust`.
SamplingRow make_row(int combo, int64_t vocab, int32_t logits_row, std::mt19937_64& rng,
                     std::vector<TokenAdjustment>& adjust) {
  SamplingRow r;
  r.seed = rng();
  r.position = static_cast<int64_t>(rng() % 5000);
  r.logits_row = logits_row;
  r.temperature = pick(rng, {0.3, 0.7, 1.0, 1.5});
  std::vector<TokenAdjustment> list;
  const auto some_ids = [&](int n, auto make) {
    std::vector<int32_t> ids;
    for (int j = 0; j < n; ++j) ids.push_back(static_cast<int32_t>(rng() % vocab));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int32_t id : ids) list.push_back(make(id));
  };
  switch (combo) {
    case 0: r.temperature = 0.0; break;
    case 1: break;
    case 2: r.top_k = pick(rng, {1, 2, 20, 50, 1000, 5000}); break;
    case 3: r.top_p = pick(rng, {1e-6, 0.1, 0.5, 0.9, 0.95, 0.999}); break;
    case 4: r.min_p = pick(rng, {0.01, 0.05, 0.2, 0.9, 1.0}); break;
    case 5:
      r.top_k = pick(rng, {5, 40, 200, 3000});
      r.top_p = pick(rng, {0.5, 0.9, 0.95});
      r.min_p = pick(rng, {0.0, 0.02, 0.1});
      break;
    case 6:
      r.repetition_penalty = pick(rng, {1.0f, 1.1f, 1.7f});
      r.frequency_penalty = pick(rng, {0.0, 0.3, -0.5});
      r.presence_penalty = pick(rng, {0.0, 0.4, 1.5});
      r.top_p = pick(rng, {1.0, 0.9});
      some_ids(60, [&](int32_t id) { return TokenAdjustment{id, 0.0f, static_cast<int32_t>(1 + rng() % 6), 0}; });
      break;
    case 7:
      some_ids(40, [&](int32_t id) {
        return TokenAdjustment{id, std::uniform_real_distribution<float>(-100.0f, 100.0f)(rng), 0, 0};
      });
      break;
    case 8:
      r.temperature = pick(rng, {0.0, 0.8});
      some_ids(12, [&](int32_t id) { return TokenAdjustment{id, 0.0f, 0, 1}; });
      break;
    default:
      r.want_logprob = 1;
      r.top_logprobs = combo == 9 ? 0 : combo == 10 ? 5 : 20;
      r.temperature = pick(rng, {0.0, 1.0});
      r.top_p = pick(rng, {1.0, 0.9});
  }
  if (combo < 9 && rng() % 4 == 0) r.want_logprob = 1, r.top_logprobs = static_cast<int32_t>(rng() % 21);
  r.adjust_begin = static_cast<int32_t>(adjust.size());
  adjust.insert(adjust.end(), list.begin(), list.end());
  r.adjust_end = static_cast<int32_t>(adjust.size());
  return r;
}

// Device copy of a host vector (bytes in an I64 tensor, which keeps them alive).
template <typename T>
Tensor to_device(const std::vector<T>& v) {
  Tensor t = Tensor::empty(DType::kI64, {static_cast<int64_t>((v.size() * sizeof(T) + 7) / 8) + 1}, Device::kCUDA);
  if (!v.empty()) NW_CUDA_CHECK(cudaMemcpy(t.data, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return t;
}

// Everything the GPU call needs, on the device.
struct DeviceCall {
  Tensor logits, rows, adjustments, workspace;
  ops::SampledRows out;
  ops::SamplingBatch batch;

  DeviceCall(const Tensor& host_logits, const ops::SamplingBatchHost& host)
      : logits(host_logits.to(Device::kCUDA)), rows(to_device(host.rows)), adjustments(to_device(host.adjustments)) {
    const int64_t n = static_cast<int64_t>(host.rows.size());
    const size_t bytes = ops::cuda::sampling_workspace_bytes(n, logits.size(1));
    workspace = Tensor::empty(DType::kI64, {static_cast<int64_t>(bytes / 8) + 1}, Device::kCUDA);
    out = {testing::poisoned(DType::kI32, {n}), testing::poisoned(DType::kF32, {n}),
           testing::poisoned(DType::kI32, {n, ops::kMaxTopLogprobs}),
           testing::poisoned(DType::kF32, {n, ops::kMaxTopLogprobs})};
    batch = {static_cast<const SamplingRow*>(rows.data), n, static_cast<const TokenAdjustment*>(adjustments.data),
             static_cast<int64_t>(host.adjustments.size())};
  }
  void run(cudaStream_t stream = nullptr) {
    ops::cuda::sample_tokens(logits, batch, out, workspace.data, workspace.nbytes(), stream);
  }
};

bool logprobs_agree(float gpu, float cpu) {
  if (std::isnan(cpu) || std::isinf(cpu)) return std::isnan(cpu) ? std::isnan(gpu) : gpu == cpu;
  return std::fabs(gpu - cpu) <= 1e-5f;
}

// Samples `host` on both devices and compares every output a row asks for.
void expect_same_as_cpu(const Tensor& logits, const ops::SamplingBatchHost& host, const std::string& what) {
  const int64_t n = static_cast<int64_t>(host.rows.size());
  ops::SampledRows cpu = ops::SampledRows::allocate(n, Device::kCPU);
  ops::sample_tokens(logits, host.view(), cpu);
  DeviceCall call(logits, host);
  call.run();
  NW_CUDA_CHECK(cudaDeviceSynchronize());
  const Tensor tokens = call.out.tokens.to(Device::kCPU), logprobs = call.out.logprobs.to(Device::kCPU);
  const Tensor top_ids = call.out.top_ids.to(Device::kCPU), top_lp = call.out.top_logprobs.to(Device::kCPU);
  int mismatches = 0;
  for (int64_t b = 0; b < n && mismatches < 10; ++b) {
    const SamplingRow& r = host.rows[b];
    const std::string row = what + " row " + std::to_string(b) + " (T " + std::to_string(r.temperature) + ", top_k " +
                            std::to_string(r.top_k) + ", top_p " + std::to_string(r.top_p) + ", min_p " +
                            std::to_string(r.min_p) + ", " + std::to_string(r.adjust_end - r.adjust_begin) +
                            " adjustments)";
    const int32_t want = cpu.tokens.ptr<int32_t>()[b], got = tokens.ptr<int32_t>()[b];
    if (got != want) ++mismatches;
    EXPECT_EQ(got, want) << row;
    if (!r.want_logprob && r.top_logprobs == 0) continue;
    EXPECT_TRUE(logprobs_agree(logprobs.f32()[b], cpu.logprobs.f32()[b]))
        << row << ": logprob " << logprobs.f32()[b] << " vs " << cpu.logprobs.f32()[b];
    for (int j = 0; j < std::min<int64_t>(r.top_logprobs, logits.size(1)); ++j) {
      const int64_t at = b * ops::kMaxTopLogprobs + j;
      EXPECT_EQ(top_ids.ptr<int32_t>()[at], cpu.top_ids.ptr<int32_t>()[at]) << row << " top " << j;
      EXPECT_TRUE(logprobs_agree(top_lp.f32()[at], cpu.top_logprobs.f32()[at])) << row << " top " << j;
    }
  }
}

// A batch of `rows` rows, row i of combination (i + seed) % kCombos over logits of style i % kStyles.
void check_mixed_batch(int64_t vocab, int64_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed * 7919 + static_cast<uint64_t>(vocab));
  const Tensor logits =
      random_logits(rows, vocab, rng, [&](int64_t i) { return static_cast<int>((i + seed) % kStyles); });
  ops::SamplingBatchHost host;
  for (int64_t i = 0; i < rows; ++i) {
    host.rows.push_back(make_row(static_cast<int>((i + seed) % kCombos), vocab, static_cast<int32_t>(i), rng,
                                 host.adjustments));
  }
  expect_same_as_cpu(logits, host, "V " + std::to_string(vocab) + " B " + std::to_string(rows) + " seed " +
                                       std::to_string(seed));
}

TEST(CudaSampling, EveryCombinationMatchesTheCpuTokenForToken) {
  NW_REQUIRE_GPU();
  for (int64_t vocab : {1000, 32000, 102400, 129280})
    for (int64_t rows : {1, 12, 37, 300})
      for (uint64_t seed : {1, 2, 3}) check_mixed_batch(vocab, rows, seed);
}

TEST(CudaSampling, OddAndExtremeVocabularies) {
  NW_REQUIRE_GPU();
  for (int64_t vocab : {1, 2, 7, 1001, 2049, 129281}) check_mixed_batch(vocab, 24, 4);
  check_mixed_batch(ops::kMaxSamplingVocab, 12, 5);  // 2^20: the largest bitmap in shared memory
}

TEST(CudaSampling, CombinationsOneAtATime) {
  NW_REQUIRE_GPU();
  const int64_t vocab = 129280, rows = 2 * kStyles;
  for (int combo = 0; combo < kCombos; ++combo) {
    std::mt19937_64 rng(100 + combo);
    const Tensor logits = random_logits(rows, vocab, rng, [](int64_t i) { return static_cast<int>(i % kStyles); });
    ops::SamplingBatchHost host;
    for (int64_t i = 0; i < rows; ++i)
      host.rows.push_back(make_row(combo, vocab, static_cast<int32_t>(i), rng, host.adjustments));
    expect_same_as_cpu(logits, host, kComboNames[combo]);
  }
}

TEST(CudaSampling, ForkedRowsAndTopLogprobCandidatesOfOneThread) {
  NW_REQUIRE_GPU();
  // Ids 0..79 of every 2048 (the first 20 threads' lanes) lead: 5120 top-logprob candidates, the most possible.
  const int64_t vocab = 129280;
  std::mt19937_64 rng(9);
  Tensor logits = random_logits(2, vocab, rng, [](int64_t i) { return static_cast<int>(2 * i); });
  for (int64_t i = 0; i < vocab; ++i)
    if (i % 2048 < 80) logits.f32()[i] += 20.0f;
  ops::SamplingBatchHost host;
  for (int i = 0; i < 16; ++i) {  // eight choices of an n = 8 request on each logits row
    host.rows.push_back(make_row(i % 2 ? 10 : 11, vocab, i / 8, rng, host.adjustments));
    host.rows.back().top_k = i % 3 == 0 ? 50 : 0;
  }
  expect_same_as_cpu(logits, host, "forks");
}

TEST(CudaSampling, RowsBreakingTheContractGetMinusOne) {
  NW_REQUIRE_GPU();
  const int64_t vocab = 1000;
  std::mt19937_64 rng(3);
  const Tensor logits = random_logits(1, vocab, rng, [](int64_t) { return 0; });
  ops::SamplingBatchHost host;
  host.rows.push_back(make_row(1, vocab, 0, rng, host.adjustments));
  host.rows.push_back(host.rows[0]);
  host.rows.back().logits_row = 1;  // outside the logits
  host.rows.push_back(host.rows[0]);
  host.rows.back().top_logprobs = 21;
  DeviceCall call(logits, host);
  call.run();
  const Tensor tokens = call.out.tokens.to(Device::kCPU);
  ops::SamplingBatchHost valid;
  valid.rows = {host.rows[0]};
  ops::SampledRows cpu = ops::SampledRows::allocate(1, Device::kCPU);
  ops::sample_tokens(logits, valid.view(), cpu);
  EXPECT_EQ(tokens.ptr<int32_t>()[0], cpu.tokens.ptr<int32_t>()[0]);
  EXPECT_EQ(tokens.ptr<int32_t>()[1], -1);
  EXPECT_EQ(tokens.ptr<int32_t>()[2], -1);
  const ops::SamplingBatch on_host = host.view();  // host pointers are refused by name
  EXPECT_THROW(ops::cuda::sample_tokens(call.logits, on_host, call.out, call.workspace.data, call.workspace.nbytes(),
                                        nullptr),
               Error);
}

// Not a check: the time of one call at the shapes of a DeepSeek-V3 decode step, for docs/performance.md.
TEST(CudaSampling, TimeOfOneCall) {
  NW_REQUIRE_GPU();
  const int64_t vocab = 129280, rows = 256;
  std::mt19937_64 rng(5);
  const Tensor logits = random_logits(rows, vocab, rng, [](int64_t) { return 2; });  // BF16 N(0, 2)
  struct Setting {
    const char* name;
    double temperature, top_p, min_p;
    int top_k, top_logprobs;
  };
  for (const Setting& s : {Setting{"greedy", 0.0, 1.0, 0.0, 0, 0}, Setting{"temperature 0.7", 0.7, 1.0, 0.0, 0, 0},
                           Setting{"temperature 0.7 + top_p 0.9", 0.7, 0.9, 0.0, 0, 0},
                           Setting{"top_k 50", 1.0, 1.0, 0.0, 50, 0},
                           Setting{"top_k 50 + top_p 0.95 + min_p 0.05", 1.0, 0.95, 0.05, 50, 0},
                           Setting{"top_p 0.9 + top logprobs 20", 0.7, 0.9, 0.0, 0, 20}}) {
    ops::SamplingBatchHost host;
    for (int64_t i = 0; i < rows; ++i) {
      SamplingRow r;
      r.seed = rng();
      r.temperature = s.temperature;
      r.top_p = s.top_p;
      r.min_p = s.min_p;
      r.top_k = s.top_k;
      r.top_logprobs = s.top_logprobs;
      r.want_logprob = s.top_logprobs > 0;
      r.logits_row = static_cast<int32_t>(i);
      host.rows.push_back(r);
    }
    DeviceCall call(logits, host);
    cudaEvent_t start, stop;
    NW_CUDA_CHECK(cudaEventCreate(&start));
    NW_CUDA_CHECK(cudaEventCreate(&stop));
    call.run();  // warm-up
    constexpr int kCalls = 20;
    NW_CUDA_CHECK(cudaEventRecord(start));
    for (int i = 0; i < kCalls; ++i) call.run();
    NW_CUDA_CHECK(cudaEventRecord(stop));
    NW_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    NW_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    std::printf("sample_tokens B=%lld V=%lld %-36s %8.1f us per call\n", static_cast<long long>(rows),
                static_cast<long long>(vocab), s.name, 1000.0 * ms / kCalls);
    NW_CUDA_CHECK(cudaEventDestroy(start));
    NW_CUDA_CHECK(cudaEventDestroy(stop));
  }
}

}  // namespace
}  // namespace narwhal
