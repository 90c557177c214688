// The decode batch sizes the CUDA runner captures graphs for, and DP attention's rule for which of them every rank
// replays in a step: host arithmetic, apart from the runner so that it is tested without a GPU.
#pragma once

#include <vector>

#include "model/forward_batch.h"

namespace narwhal {

// SGLang's capture sizes: 1, 2, 4, 8, 12, every 8 from 16 to 256, every 16 to 512, then every 32; those <= max_bs,
// and max_bs itself.
std::vector<int> cuda_graph_batch_sizes(int max_bs);

// DP attention's decode-graph rule. Every rank of the TP group must replay the same graph in a step or none (a
// graph's collectives meet the same graph's on the other ranks), yet a rank knows only its own group's batch. So the
// rule reads only what every rank holds alike: the batch's dp_tokens and dp_decode (the engine gives each rank the
// same) and `graph_sizes`, the captured sizes (ascending; every rank captures the same, CudaModelRunner's
// constructor). It returns the size whose graph every group replays, its own decode batch padded to it with empty
// sequences (an idle group's wholly padding): the smallest captured size >= max(dp_tokens), when dp_decode says
// every group decodes and some group has a token; else 0, and every rank runs eager, its FFN collectives sized by
// dp_tokens alone.
int dp_graph_size(const ForwardBatch& batch, const std::vector<int>& graph_sizes);

}  // namespace narwhal
