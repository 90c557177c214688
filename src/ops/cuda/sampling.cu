// GPU sampler: one CTA per row; passes 1 and 2 here, the radix select and the draw in sampling_row.cuh. Every
// integer sum is exact, so shared-memory atomics and tree sums equal the CPU's sequential ones.
#include "ops/cuda/sampling.h"

#include <climits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/sampling_row.cuh"

namespace narwhal::ops::cuda {

namespace {

using namespace sampling;

struct Args {
  const float* logits;
  int64_t logit_rows;
  int vocab;
  bool vectorized;
  const SamplingRow* rows;
  const TokenAdjustment* adjustments;
  int64_t num_adjustments;
  bool bitmap;  // shared memory ends with a V-bit bitmap (the batch has adjustments)
  int32_t* tokens;
  float* logprobs;
  int32_t* top_ids;
  float* top_logprobs;
  uint64_t* candidates;  // per row: the raw keys >= its top-logprob threshold
  int64_t candidate_cap;
};

__device__ inline bool follows_contract(const SamplingRow& p, const Args& a) {
  return p.logits_row >= 0 && p.logits_row < a.logit_rows && p.adjust_begin >= 0 && p.adjust_begin <= p.adjust_end &&
         p.adjust_end <= a.num_adjustments && p.temperature >= 0.0 && p.top_p > 0.0 && p.top_p <= 1.0 &&
         p.min_p >= 0.0 && p.min_p <= 1.0 && p.top_logprobs >= 0 && p.top_logprobs <= kMaxTopLogprobs;
}

// Marks the row's adjusted ids in a bitmap after Shared, so that the passes look up only those.
__device__ inline void mark_adjusted(Row& row, unsigned char* smem) {
  uint32_t* bitmap = reinterpret_cast<uint32_t*>(smem + sizeof(Shared));
  for (int i = threadIdx.x; i < (row.vocab + 31) / 32; i += kThreads) bitmap[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < row.num_adjust; i += kThreads) {
    const int token = row.adjust[i].token;
    if (token >= 0 && token < row.vocab) atomicOr(&bitmap[token >> 5], 1u << (token & 31));
  }
  __syncthreads();
  row.marked = bitmap;
}

struct FirstPass {
  uint64_t best;       // the greedy key of the adjusted logits
  double log_z;        // log-sum-exp of the raw logits (when logprobs are asked for)
  uint64_t threshold;  // the top-logprob candidates' lowest key (when top_n > 0)
};

// Pass 1: the greedy key; the raw logits' online log-sum-exp and each thread's best raw key. The top logprobs are
// among the keys >= the top_n-th best of those: at most top_n threads hold such keys, each 4 a tile at the most,
// which bounds the workspace.
__device__ inline FirstPass first_pass(Shared& s, const Row& row, bool want_logprobs, int top_n) {
  uint64_t best = 0, top_best = 0;
  float raw_max = -INFINITY;
  double raw_sum = 0.0;
  for_each_tile(row, [&](int, int id0, const float (&v)[4]) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (id0 + k >= row.vocab) break;
      best = max(best, logit_key(logit_at(row, id0 + k, v[k]), id0 + k));
      if (!want_logprobs) continue;
      if (v[k] > raw_max) {
        raw_sum = raw_sum * static_cast<double>(expf(raw_max - v[k])) + 1.0;
        raw_max = v[k];
      } else if (v[k] != -INFINITY) {
        raw_sum += static_cast<double>(expf(v[k] - raw_max));  // a NaN poisons the sum, as on the CPU
      }
      top_best = max(top_best, logit_key(v[k], id0 + k));
    }
  });
  FirstPass out{block_reduce<kThreads>(best, s.red_u, [](uint64_t x, uint64_t y) { return max(x, y); }), 0.0, 0};
  if (want_logprobs) {
    const float m = block_reduce<kThreads>(raw_max, s.red_f, [](float x, float y) { return fmaxf(x, y); });
    const double part = raw_max > -INFINITY ? raw_sum * static_cast<double>(expf(raw_max - m)) : raw_sum;
    const double sum = block_reduce<kThreads>(part, s.red_d, [](double x, double y) { return x + y; });
    out.log_z = static_cast<double>(m) + log(sum);
  }
  if (top_n > 0) {
    s.keys[threadIdx.x] = top_best;
    if (threadIdx.x == 0) s.found = 0;
    sort_descending<kThreads>(s.keys, kThreads);
    out.threshold = s.keys[top_n - 1];
  }
  return out;
}

__device__ inline Pair block_sum(Shared& s, Pair v) {
  const auto add = [](uint64_t x, uint64_t y) { return x + y; };
  return {block_reduce<kThreads>(v.count, s.red_u, add), block_reduce<kThreads>(v.mass, s.red_u, add)};
}

struct Weights {
  Pair positive;    // weights > 0: how many, their mass
  Pair min_p_kept;  // weights >= min_weight
};

// Pass 2 (sampled rows): the weights' counts and masses, tile masses under min-p, and the level-0 histogram when
// top-k or top-p may cut. Also (top_n > 0) the top-logprob candidates into the workspace.
__device__ inline Weights weight_pass(Shared& s, const Row& row, bool sampled, bool ranked, uint64_t min_weight,
                                      int top_n, uint64_t threshold, uint64_t* candidates, int64_t capacity) {
  s.tile_mass[threadIdx.x] = 0;
  if (ranked)
    for (int i = threadIdx.x; i < kLevel0Bins; i += kThreads) s.count0[i] = 0, s.mass0[i] = 0;
  __syncthreads();
  Weights w{{0, 0}, {0, 0}};
  for_each_tile(row, [&](int tile, int id0, const float (&v)[4]) {
    uint64_t tile_mass = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (id0 + k >= row.vocab) break;
      if (sampled) {
        const uint64_t weight = weight_at(row, id0 + k, v[k]);
        if (weight >= min_weight) w.min_p_kept += Pair{1, weight}, tile_mass += weight;
        if (weight) {
          w.positive += Pair{1, weight};
          if (ranked) {
            const int bin = level0_bin(weight);
            atomicAdd(&s.count0[bin], 1u);
            atomic_add_u64(&s.mass0[bin], weight);
          }
        }
      }
      const uint64_t key = logit_key(v[k], id0 + k);
      if (top_n > 0 && key >= threshold) {
        const unsigned slot = atomicAdd(&s.found, 1u);
        if (slot < capacity) candidates[slot] = key;
      }
    }
    if (sampled) add_tile_mass(s, tile, tile_mass);
  });
  return {block_sum(s, w.positive), block_sum(s, w.min_p_kept)};
}

// Ranks the candidates by counting (a few dozen in practice, 20 * 4 * tiles at the very most) into the outputs.
__device__ inline void write_top_logprobs(const Shared& s, const Row& row, const Args& a, int b, int top_n,
                                          double log_z) {
  const uint64_t* candidates = a.candidates + b * a.candidate_cap;
  const int n = static_cast<int>(min(static_cast<int64_t>(s.found), a.candidate_cap));
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const uint64_t key = candidates[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += candidates[j] > key;
    if (rank >= top_n) continue;
    const int id = logit_key_id(key);
    a.top_ids[b * kMaxTopLogprobs + rank] = id;
    a.top_logprobs[b * kMaxTopLogprobs + rank] = static_cast<float>(static_cast<double>(row.logits[id]) - log_z);
  }
}

__global__ void __launch_bounds__(kThreads, 2) sample_kernel(const Args a) {
  extern __shared__ __align__(16) unsigned char smem[];
  Shared& s = *reinterpret_cast<Shared*>(smem);
  grid_dependency_wait();
  const int b = blockIdx.x;
  const SamplingRow& p = a.rows[b];
  if (!follows_contract(p, a)) {
    if (threadIdx.x == 0) a.tokens[b] = -1;
    return;
  }
  Row row{a.logits + static_cast<int64_t>(p.logits_row) * a.vocab, &p, a.adjustments + p.adjust_begin,
          p.adjust_end - p.adjust_begin, nullptr, a.vocab, a.vectorized, 0.0f, 0.0};
  if (threadIdx.x == 0) s.has_buffer = 0;
  if (a.bitmap && row.num_adjust > 0) mark_adjusted(row, smem);
  const bool want_logprobs = p.want_logprob || p.top_logprobs > 0;
  const int top_n = min(p.top_logprobs, a.vocab);
  const FirstPass first = first_pass(s, row, want_logprobs, top_n);

  int32_t token = logit_key_id(first.best);
  row.max_x = logit_key_value(first.best);
  const bool sampled = p.temperature > 0.0 && isfinite(row.max_x);  // else greedy
  row.inv_t = sampled ? inverse_temperature(p.temperature) : 0.0;
  const uint64_t min_weight = min_p_threshold(p.min_p);
  const uint64_t top_k = p.top_k > 0 && p.top_k < a.vocab ? static_cast<uint64_t>(p.top_k) : a.vocab;
  const bool ranked = sampled && (top_k < static_cast<uint64_t>(a.vocab) || p.top_p < 1.0);
  Weights w{{0, 0}, {0, 0}};
  if (sampled || top_n > 0)
    w = weight_pass(s, row, sampled, ranked, min_weight, top_n, first.threshold,
                    a.candidates + b * a.candidate_cap, a.candidate_cap);

  if (sampled) {
    uint64_t cut = min_weight << kIdBits, kept_mass = w.min_p_kept.mass;  // min-p alone: weights >= min_weight
    if (p.top_p < 1.0 || (top_k < w.positive.count && top_k < w.min_p_kept.count)) {
      uint64_t top_k_mass = w.positive.mass;
      if (p.top_p < 1.0 && top_k < w.positive.count) {
        select_cut(s, row, Keep{top_k, kNoLimit});
        top_k_mass = s.kept_mass;
      }
      const uint64_t limit = p.top_p < 1.0 ? top_p_threshold(p.top_p, top_k_mass) : kNoLimit;
      select_cut(s, row, Keep{min(top_k, w.min_p_kept.count), limit});
      cut = s.cut;
      kept_mass = s.kept_mass;
      // The tiles hold the keys above the buffer; add the buffered keys >= cut (indices 0 .. s.pick).
      for (int i = threadIdx.x; i <= s.pick; i += kThreads)
        atomic_add_u64(&s.tile_mass[key_id(s.keys[i]) / kTile], key_weight(s.keys[i]));
      __syncthreads();
    }
    token = draw(s, row, cut, draw_target(uniform_bits(p.seed, p.position), kept_mass), token);
  }

  if (threadIdx.x == 0) {
    a.tokens[b] = token;
    if (want_logprobs) a.logprobs[b] = static_cast<float>(static_cast<double>(row.logits[token]) - first.log_z);
  }
  if (top_n > 0) write_top_logprobs(s, row, a, b, top_n, first.log_z);
}

int64_t candidate_cap(int64_t vocab) { return int64_t{kMaxTopLogprobs} * 4 * ceil_div(vocab, kTile); }

void check_device(const Tensor& t, DType dtype, int64_t rows, int64_t cols, const char* what) {
  const bool shape_ok = cols == 0 ? t.ndim() == 1 && t.size(0) == rows
                                  : t.ndim() == 2 && t.size(0) == rows && t.size(1) == cols;
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype && shape_ok && (rows == 0 || t.data), "sample_tokens: ",
           what, " must be a CUDA ", dtype_name(dtype), " tensor of ", rows, cols ? cat(" x ", cols) : std::string(),
           ", got ", dtype_name(t.dtype), t.shape_string(), t.device == Device::kCUDA ? " on CUDA" : " on the host");
}

// The sampler reads `what` on the device: it must be device (or managed) memory.
void check_device_pointer(const void* p, const char* what) {
  cudaPointerAttributes attr{};
  NW_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  NW_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, "sample_tokens: ", what,
           " is not in device memory");
}

}  // namespace

size_t sampling_workspace_bytes(int64_t rows, int64_t vocab) {
  return static_cast<size_t>(rows * candidate_cap(vocab)) * sizeof(uint64_t);
}

void sample_tokens(const Tensor& logits, const SamplingBatch& batch, SampledRows& out, void* workspace,
                   size_t workspace_bytes, cudaStream_t stream) {
  NW_CHECK(logits.device == Device::kCUDA && logits.dtype == DType::kF32 && logits.ndim() == 2 &&
               logits.size(1) >= 1 && logits.size(1) <= kMaxSamplingVocab && logits.data,
           "sample_tokens: logits must be a CUDA F32 [rows, vocab] with 1 <= vocab <= ", kMaxSamplingVocab, ", got ",
           dtype_name(logits.dtype), logits.shape_string());
  const int64_t n = batch.num_rows, vocab = logits.size(1);
  NW_CHECK(n >= 0 && n <= kMaxSamplingRows && batch.num_adjustments >= 0 && batch.num_adjustments <= INT32_MAX,
           "sample_tokens: ", n, " rows (at most ", kMaxSamplingRows, ") and ", batch.num_adjustments,
           " adjustments (at most 2^31 - 1)");
  check_device(out.tokens, DType::kI32, n, 0, "tokens");
  check_device(out.logprobs, DType::kF32, n, 0, "logprobs");
  check_device(out.top_ids, DType::kI32, n, kMaxTopLogprobs, "top_ids");
  check_device(out.top_logprobs, DType::kF32, n, kMaxTopLogprobs, "top_logprobs");
  const size_t needed = sampling_workspace_bytes(n, vocab);
  NW_CHECK(workspace_bytes >= needed && (needed == 0 || workspace), "sample_tokens: workspace of ", workspace_bytes,
           " bytes, needs ", needed);
  if (n == 0) return;
  check_device_pointer(batch.rows, "batch.rows");
  if (batch.num_adjustments > 0) check_device_pointer(batch.adjustments, "batch.adjustments");
  check_device_pointer(workspace, "the workspace");

  const bool bitmap = batch.num_adjustments > 0;
  const size_t bitmap_bytes = static_cast<size_t>(ceil_div(vocab, 32)) * sizeof(uint32_t);
  const size_t smem = sizeof(Shared) + (bitmap ? bitmap_bytes : 0);
  // The attribute belongs to the function, so it is set to the most any call at this vocabulary takes, never to one
  // call's size: device-local TP ranks (threads on one GPU) launching with and without the bitmap would race.
  NW_CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(sizeof(Shared) + bitmap_bytes)));
  const Args args{logits.f32(),
                  logits.size(0),
                  static_cast<int>(vocab),
                  vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits.data) % 16 == 0,
                  batch.rows,
                  batch.adjustments,
                  batch.num_adjustments,
                  bitmap,
                  out.tokens.ptr<int32_t>(),
                  out.logprobs.f32(),
                  out.top_ids.ptr<int32_t>(),
                  out.top_logprobs.f32(),
                  static_cast<uint64_t*>(workspace),
                  candidate_cap(vocab)};
  launch(sample_kernel, static_cast<int>(n), kThreads, smem, stream, args);
}

}  // namespace narwhal::ops::cuda
