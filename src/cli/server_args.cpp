// ServerArgs flag registration and validation.
#include "cli/server_args.h"

#include "core/error.h"
#include "core/logging.h"

namespace narwhal {

void ServerArgs::register_flags(ArgParser& p) {
  p.add("model-path", &model_path, "model directory: config.json + safetensors in the Hugging Face layout");
  p.add("device", &device, "where the model runs: cpu (the CUDA backend is not built yet)");
  p.add("page-size", &page_size, "tokens per page of the paged MLA latent cache");
  p.add("random-seed", &random_seed, "seed for sampling when a request gives none");
  p.add("log-level", &log_level, "debug, info, warning or error");
}

void ServerArgs::validate() const {
  set_log_level(parse_log_level(log_level));
  NW_CHECK(!model_path.empty(), "--model-path is required");
  NW_CHECK(device == "cpu", "--device ", device, ": only the cpu backend is built so far");
  NW_CHECK(page_size > 0 && page_size <= 4096, "--page-size must be in [1, 4096], got ", page_size);
}

}  // namespace narwhal
