// cuda_graph_batch_sizes (SGLang's capture list) and dp_graph_size (DP attention's graph rule).
#include "runtime/cuda_graph_sizes.h"

#include <algorithm>

namespace narwhal {

std::vector<int> cuda_graph_batch_sizes(int max_bs) {
  std::vector<int> sizes;
  for (int bs : {1, 2, 4, 8, 12})
    if (bs <= max_bs) sizes.push_back(bs);
  for (int bs = 16; bs <= max_bs; bs += bs < 256 ? 8 : bs < 512 ? 16 : 32) sizes.push_back(bs);
  if (max_bs > 0 && (sizes.empty() || sizes.back() != max_bs)) sizes.push_back(max_bs);
  return sizes;
}

int dp_graph_size(const ForwardBatch& batch, const std::vector<int>& graph_sizes) {
  if (!batch.dp_decode || batch.dp_tokens.empty()) return 0;
  const int64_t most = *std::max_element(batch.dp_tokens.begin(), batch.dp_tokens.end());
  if (most == 0) return 0;  // every group idle: nothing runs anywhere
  for (int bs : graph_sizes)
    if (bs >= most) return bs;
  return 0;
}

}  // namespace narwhal
