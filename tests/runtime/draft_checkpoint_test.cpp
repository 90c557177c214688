// --speculative-draft-model-path: a NextN checkpoint as SGLang's export writes it (the target's config.json, the MTP
// layer under its full-model names model.layers.<N>.* in a file of the export's own name, and the full model's index
// copied beside it, naming shards the directory lacks) drafts for a target checkpoint stripped of its MTP layer:
// plain greedy decoding's ids, at the accept length of the checkpoint with its own layer (the same weights, so the
// same drafts); a draft of other dims, or one without the layer, is refused by name.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/json.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace narwhal {
namespace {

namespace fs = std::filesystem;

// The trained model's checkpoint split as a target without its MTP layer (layer 4) and SGLang's NextN export of it.
struct SplitCheckpoint {
  testing::TempDir dir;
  std::string target = dir.file("target"), draft = dir.file("draft");

  SplitCheckpoint() {
    const std::string source = testing::source_path("models/arith-tiny");
    fs::create_directories(target);
    fs::create_directories(draft);
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(source + "/" + f, target + "/" + f);
    fs::copy_file(source + "/config.json", draft + "/config.json");
    std::vector<std::pair<std::string, Tensor>> main, mtp;
    const SafetensorsFile file(source + "/model.safetensors");
    for (const auto& [name, info] : file.tensors()) {
      Tensor t = Tensor::zeros(info.dtype, info.shape);
      std::memcpy(t.data, info.data, info.nbytes);
      (name.rfind("model.layers.4.", 0) == 0 ? mtp : main).emplace_back(name, std::move(t));
    }
    write_safetensors(target + "/model.safetensors", main);
    write_safetensors(draft + "/nextn_layer_parameters.safetensors", mtp);
    std::ofstream(draft + "/model.safetensors.index.json")
        << R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00163.safetensors"}})";
  }
};

std::string generate(const std::string& model, const std::string& flags, int status = 0) {
  const std::string question =
      "$'Question: Noah buys 3 coins for $7 each and pays with a $50 bill. How much change does Noah get?\\nAnswer:'";
  return testing::run_command(testing::narwhal_bin() + " generate --model-path " + model +
                                  " --temperature 0 --max-new-tokens 40 --page-size 4 --text " + question + " " +
                                  flags + " 2>&1",
                              status);
}

std::string output_ids(const std::string& out) {
  const size_t at = out.find("{\"output_ids\"");
  EXPECT_NE(at, std::string::npos) << out;
  return at == std::string::npos ? "" : json::parse(out.substr(at, out.find('\n', at) - at))["output_ids"].dump();
}

std::string accept_len(const std::string& out) {
  const size_t at = out.find("accept len ");
  EXPECT_NE(at, std::string::npos) << out;
  return at == std::string::npos ? "" : out.substr(at, 15);
}

TEST(DraftCheckpoint, NextNExportDraftsAsTheCheckpointsOwnLayer) {
  const SplitCheckpoint split;
  const std::string own = testing::source_path("models/arith-tiny");
  const std::string nextn = " --speculative-algorithm NEXTN --speculative-num-steps 3 --json";
  const std::string plain = generate(split.target, "--json --log-level error");
  const std::string with_own = generate(own, nextn);
  const std::string with_draft = generate(split.target, nextn + " --speculative-draft-model-path " + split.draft);
  EXPECT_EQ(output_ids(with_draft), output_ids(plain));
  EXPECT_EQ(output_ids(with_own), output_ids(plain));
  EXPECT_EQ(accept_len(with_draft), accept_len(with_own));
  // SGLang's older spellings of the two flags.
  const std::string aliased = generate(split.target, " --speculative-algo NEXTN --speculative-num-steps 3 --json "
                                                     "--speculative-draft " + split.draft);
  EXPECT_EQ(output_ids(aliased), output_ids(plain));
  EXPECT_EQ(accept_len(aliased), accept_len(with_own));
  // The target alone has no layer to draft with.
  EXPECT_NE(generate(split.target, nextn, 1).find("num_nextn_predict_layers"), std::string::npos);
}

TEST(DraftCheckpoint, DraftsOfOtherDimsOrWithoutTheLayerAreRefusedByName) {
  const SplitCheckpoint split;
  const std::string nextn = " --speculative-algorithm NEXTN --speculative-draft-model-path ";
  // No layer: its config alone.
  const std::string empty = split.dir.file("empty");
  fs::create_directories(empty);
  fs::copy_file(split.draft + "/config.json", empty + "/config.json");
  EXPECT_NE(generate(split.target, nextn + empty, 1).find("model.layers.4.eh_proj.weight"), std::string::npos);
  // Another model's dims.
  json config = json::parse(std::ifstream(split.draft + "/config.json"));
  config["hidden_size"] = 512;
  std::ofstream(split.draft + "/config.json", std::ios::trunc) << config.dump();
  const std::string out = generate(split.target, nextn + split.draft, 1);
  EXPECT_NE(out.find("field 'hidden_size' is 512"), std::string::npos) << out;
  // Not a checkpoint directory.
  EXPECT_NE(generate(split.target, nextn + split.dir.file("none"), 1).find("no config.json"), std::string::npos);
  // Without --speculative-algorithm it means nothing.
  const std::string alone = generate(split.target, "--speculative-draft-model-path " + split.draft, 1);
  EXPECT_NE(alone.find("need --speculative-algorithm"), std::string::npos);
}

}  // namespace
}  // namespace narwhal
