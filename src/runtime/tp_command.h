// TpCommand: what TP rank 0's engine asks every rank of its group to do next (a step, a page copy, ...): handed to
// the ranks of its own process in memory, and encoded for the command channel to the other nodes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/forward_batch.h"

namespace narwhal {

struct TpCommand {
  enum class Kind : uint8_t {
    kStep,       // run the batch; rank 0 draws the tokens (ModelRunner::launch + finish)
    kRun,        // run the batch; rank 0 returns the logits (ModelRunner::run)
    kCopyPage,   // ModelRunner::copy_page(src, dst)
    kHeartbeat,  // nothing: node 0 is alive, and idle
    kStop,       // the engine is done: every rank ends
  };
  Kind kind = Kind::kHeartbeat;
  // kStep, kRun: a batch per DP-attention group (DP rank), in group order; one without DP attention. An idle
  // group's is empty: its ranks still meet the others around each MLP / MoE.
  std::vector<ForwardBatch> batches;
  bool return_logits = false;  // kStep
  int32_t group = 0;           // kCopyPage: the DP group whose cache it is
  int32_t src = 0, dst = 0;    // kCopyPage
};

std::string encode_command(const TpCommand& command);
// Throws an Error when the bytes are not an encoded command (a truncated or foreign message).
TpCommand decode_command(const std::string& bytes);

}  // namespace narwhal
