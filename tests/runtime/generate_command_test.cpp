// `narwhal generate` through the engine: batch input (repeated --input-ids, --input-ids-file) prints one line
// per prompt and choice, each equal to that prompt run alone; the single-prompt output keeps its old form.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/json.h"
#include "test_util.h"

namespace narwhal {
namespace {

// Runs a shell command; returns its stdout, expecting exit status `status`.
std::string run(const std::string& command, int status) {
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  EXPECT_EQ(WEXITSTATUS(pclose(pipe)), status) << command;
  return out;
}

// Runs `narwhal generate` on the v3 fixture with `flags`; returns stdout, expecting exit status `status`.
std::string generate(const std::string& flags, int status = 0) {
  return run(testing::narwhal_bin() + " generate --model-path " + testing::fixture_dir("v3") +
                 " --log-level error --temperature 0 --ignore-eos " + flags + " 2>/dev/null",
             status);
}

std::vector<json> lines_of(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(GenerateCommand, BatchLinesEqualEachPromptAlone) {
  const std::vector<std::string> prompts = {"5,17,42", "9,8,7,6,5"};
  std::vector<json> alone;
  for (const std::string& p : prompts) {
    const std::string out = generate("--json --max-new-tokens 4 --input-ids " + p);
    const json j = json::parse(out);
    EXPECT_EQ(j.size(), 1u) << "one prompt keeps the plain {\"output_ids\": [...]} form: " << out;
    alone.push_back(j);
  }
  testing::TempDir dir;
  std::ofstream(dir.file("ids.jsonl")) << "{\"input_ids\": [9, 8, 7, 6, 5]}\n";
  const std::vector<json> batch =
      lines_of(generate("--json --max-new-tokens 4 --input-ids 5,17,42 --input-ids-file " + dir.file("ids.jsonl") +
                        " --n 2 --chunked-prefill-size 2 --page-size 2"));
  ASSERT_EQ(batch.size(), prompts.size() * 2);
  for (const json& line : batch) {
    const size_t prompt = line.at("prompt_index").get<size_t>();
    EXPECT_EQ(line.at("output_ids"), alone[prompt].at("output_ids")) << line.dump();
    EXPECT_EQ(line.at("finish_reason").at("type"), "length");
  }
}

TEST(GenerateCommand, BadInputIsAnErrorMessage) {
  generate("--input-ids 5,x", 1);
  generate("--input-ids 5 --stop end", 1);  // the fixture has no tokenizer
  generate("--input-ids 999", 1);  // outside the vocabulary
}

// Without a usable GPU, the CUDA paths say so and exit 1 (not a raw cudaMalloc / driver-version error).
TEST(GenerateCommand, NoGpuIsAClearError) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) GTEST_SKIP() << "a GPU is here";
  for (const std::string& command :
       {testing::narwhal_bin() + " generate --device cuda --model-path " + testing::fixture_dir("v3") + " --input-ids 5",
        testing::narwhal_bin() + " bench-one-batch --model-path " + testing::fixture_dir("v3")}) {
    const std::string out = run(command + " 2>&1", 1);
    EXPECT_NE(out.find("needs a CUDA GPU, and none is usable here"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace narwhal
