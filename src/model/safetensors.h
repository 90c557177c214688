// Safetensors checkpoints: a memory-mapped reader (single file or sharded with an index) and a writer.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace narwhal {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const unsigned char* data = nullptr;  // inside the mapped file
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the shard holding it, for error messages
};

// One .safetensors file: 8-byte little-endian header length, JSON header, then raw tensor bytes.
// The constructor validates the header and every tensor's byte range; errors name the file and tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return map_.path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }

 private:
  MappedFile map_;
  std::map<std::string, TensorInfo> tensors_;
};

// All tensors of a model directory: `model.safetensors`, or the shards that
// `model.safetensors.index.json` names (its weight_map is checked against the shards' headers).
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  const std::string& dir() const { return dir_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws Error naming the checkpoint and the tensor when absent.
  const TensorInfo& get(const std::string& name) const;
  // Where a missing tensor was looked for: the index file or the single shard.
  const std::string& lookup_source() const { return lookup_source_; }
  // Takes every tensor named `prefix`... of every *.safetensors file in `dir` over this checkpoint's own (a separate
  // draft checkpoint's MTP layer: SGLang's NextN export keeps the full model's names in files of any name, beside
  // an index it copied that names shards the directory lacks, so the index is not read). Returns how many it took.
  size_t overlay(const std::string& dir, const std::string& prefix);
  size_t num_tensors() const { return by_name_.size(); }
  size_t num_files() const { return files_.size(); }

 private:
  std::string dir_;
  std::string lookup_source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
};

// Writes tensors (any host dtype) in safetensors format, in the given order.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace narwhal
