// CallSignature: made from a collective's arguments, and spelled out for mismatch errors.
#include "parallel/exchange_types.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

CallSignature CallSignature::of(Collective op, const Tensor* tensor, int root, bool rows_differ) {
  CallSignature s;
  s.op = static_cast<int32_t>(op);
  s.root = root;
  if (tensor) {
    s.dtype = static_cast<int32_t>(tensor->dtype);
    s.ndim = tensor->ndim();
    for (int d = 0; d < std::min(s.ndim, kDims); ++d) s.dims[d] = tensor->shape[d];
    if (rows_differ && s.ndim > 0) s.dims[0] = -1;
  }
  return s;
}

std::string CallSignature::str() const {
  std::string out = collective_name(static_cast<Collective>(op));
  if (dtype >= 0) {
    out += cat(" ", dtype_name(static_cast<DType>(dtype)), " [");
    for (int d = 0; d < ndim; ++d) {
      out += d ? ", " : "";
      out += d >= kDims ? "..." : dims[d] < 0 ? "n" : std::to_string(dims[d]);
      if (d >= kDims) break;
    }
    out += "]";
  }
  if (root >= 0) out += cat(" from rank ", root);
  return out;
}

std::string call_mismatch(const std::string& where, const std::string& who, const std::string& their_call,
                          const std::string& our_call) {
  return cat(where, ": ", who, " is in ", their_call, " while this rank is in ", our_call,
             ": the ranks called collectives in a different order or with different arguments");
}

std::string size_mismatch(const std::string& where, const std::string& who, size_t sent, size_t expected) {
  return cat(where, ": ", who, " sends ", sent, " bytes where this rank expects ", expected,
             " (the ranks' shapes or all_to_all counts disagree)");
}

}  // namespace narwhal
