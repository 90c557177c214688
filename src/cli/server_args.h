// ServerArgs: the engine and server settings, with SGLang's flag names and defaults where they apply.
#pragma once

#include <cstdint>
#include <string>

#include "cli/arg_parser.h"

namespace narwhal {

struct ServerArgs {
  std::string model_path;
  std::string device = "cpu";
  int page_size = 64;
  int64_t random_seed = 0;
  std::string log_level = "info";

  // Registers every field as a flag (--model-path, --device, --page-size, --random-seed, --log-level).
  void register_flags(ArgParser& parser);
  // Checks values that flags alone cannot (e.g. --model-path given); applies --log-level.
  void validate() const;
};

}  // namespace narwhal
