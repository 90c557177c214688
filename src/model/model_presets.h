// config.json of the shapes `narwhal make-model` can write: the bundled tiny model and the real DeepSeek sizes.
#pragma once

#include <string>

#include "core/json.h"

namespace narwhal {

inline constexpr const char* kModelPresetNames = "tiny, v2-lite, v3";

// The config of preset `name` (Error for an unknown one), in the official DeepSeek layout. `num_layers` > 0
// keeps only that many decoder layers (benchmarks of V3's layer shapes without its 671B parameters); `fp8`
// adds DeepSeek-V3's quantization_config (128x128 block-scaled e4m3 weights).
json model_preset_config(const std::string& name, int num_layers, bool fp8);

}  // namespace narwhal
