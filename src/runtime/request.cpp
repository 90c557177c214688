// FinishReason in SGLang's meta_info JSON form.
#include "runtime/request.h"

namespace narwhal {

json FinishReason::to_json(int64_t completion_tokens) const {
  switch (kind) {
    case Kind::kLength:
      return {{"type", "length"}, {"length", completion_tokens}};
    case Kind::kAbort:
      return {{"type", "abort"}, {"message", message}};
    case Kind::kStop:
      break;
  }
  json j = {{"type", "stop"}};
  if (matched_token) j["matched"] = *matched_token;
  if (matched_text) j["matched"] = *matched_text;
  return j;
}

}  // namespace narwhal
