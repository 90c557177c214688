// Broken checkpoints fail with a message that names the file and the tensor, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/checkpoint_slice.h"
#include "model/deepseek_model.h"
#include "model/random_weights.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace narwhal {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Loads `dir` and returns the error message (fails the test if loading succeeds).
std::string load_error(const std::string& dir) {
  try {
    DeepSeekModel::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "loading " << dir << " succeeded";
  return "";
}

class BrokenCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::small_v3_config();
    parsed_ = ModelConfig::from_json(config_, "test");
  }
  // Writes the random checkpoint after `edit` changes its tensor list; one shard for simple byte surgery.
  void write(const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit, bool fp8 = false) {
    if (fp8) config_["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
    auto tensors = random_checkpoint_tensors(parsed_, 1, fp8);
    edit(tensors);
    write_checkpoint(dir_.path(), config_.dump(), tensors, 1);
  }
  std::string shard() const { return dir_.file("model-00001-of-00001.safetensors"); }

  TempDir dir_;
  json config_;
  ModelConfig parsed_;
};

void drop(std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const auto& e) { return e.first == name; });
}

TEST_F(BrokenCheckpoint, MissingTensorNamesIndexAndTensor) {
  write([](auto& t) { drop(t, "model.layers.1.self_attn.kv_b_proj.weight"); });
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing tensor 'model.layers.1.self_attn.kv_b_proj.weight'"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, WrongShapeNamesFileTensorAndShapes) {
  write([](auto& t) {
    for (auto& [name, tensor] : t)
      if (name == "model.layers.2.mlp.experts.5.down_proj.weight") tensor = Tensor::zeros(DType::kBF16, {160, 71});
  });
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.layers.2.mlp.experts.5.down_proj.weight' has shape [160, 71], expected [160, 72]"),
            std::string::npos)
      << msg;
}

TEST_F(BrokenCheckpoint, TruncatedFile) {
  write([](auto&) {});
  fs::resize_file(shard(), fs::file_size(shard()) - 1000);
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard()), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, FileShorterThanItsHeaderLength) {
  write([](auto&) {});
  fs::resize_file(shard(), 100);
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard() + ": header length"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, BadHeaderJson) {
  write([](auto&) {});
  std::fstream f(shard(), std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.write("{\"x\" !", 6);
  f.close();
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard() + ": bad safetensors header"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, UnknownDtype) {
  write([](auto&) {});
  // Rewrite one dtype string in place ("BF16" -> "BX16"), keeping the header length.
  std::string bytes = read_text_file(shard());
  size_t at = bytes.find("\"BF16\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 6, "\"BX16\"");
  std::ofstream(shard(), std::ios::binary) << bytes;
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard() + ": tensor '"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported dtype 'BX16'"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, IndexNamesMissingShard) {
  write([](auto&) {});
  fs::rename(shard(), dir_.file("elsewhere.safetensors"));
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard() + ": cannot open"), std::string::npos) << msg;
}

TEST_F(BrokenCheckpoint, Fp8WithoutScales) {
  write([](auto& t) { drop(t, "model.layers.0.self_attn.o_proj.weight_scale_inv"); }, /*fp8=*/true);
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find("'model.layers.0.self_attn.o_proj.weight' is F8_E4M3 but "
                     "'model.layers.0.self_attn.o_proj.weight_scale_inv' (its block scales) is missing"),
            std::string::npos)
      << msg;
}

TEST_F(BrokenCheckpoint, Fp8ScalesOfWrongShape) {
  write([](auto& t) {
    for (auto& [name, tensor] : t)
      if (name == "model.layers.1.mlp.shared_experts.up_proj.weight_scale_inv")
        tensor = Tensor::zeros(DType::kF32, {1, 1});
  }, /*fp8=*/true);
  std::string msg = load_error(dir_.path());
  EXPECT_NE(msg.find(shard() + ": tensor 'model.layers.1.mlp.shared_experts.up_proj.weight_scale_inv' has shape "
                               "[1, 1], expected [1, 2]"),
            std::string::npos)
      << msg;
}

TEST_F(BrokenCheckpoint, MissingConfig) {
  write([](auto&) {});
  fs::remove(dir_.file("config.json"));
  EXPECT_NE(load_error(dir_.path()).find("no config.json"), std::string::npos);
}

TEST(SafetensorsFile, WriteThenReadRoundTrips) {
  TempDir dir;
  Tensor a = Tensor::from_floats({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 1e-3f}, {2, 3});
  write_safetensors(dir.file("x.safetensors"), {{"a", a}, {"b", Tensor::zeros(DType::kI64, {4})}});
  SafetensorsFile file(dir.file("x.safetensors"));
  ASSERT_EQ(file.tensors().size(), 2u);
  const TensorInfo& info = file.tensors().at("a");
  EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(info.data) % 8, 0u) << "tensor data stays 8-byte aligned";
  Tensor back = read_f32(info, {});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back.f32()[i], a.f32()[i]);
  EXPECT_EQ(file.tensors().at("b").dtype, DType::kI64);
}

}  // namespace
}  // namespace narwhal
