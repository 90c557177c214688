// Safetensors reading (validated, zero-copy mmap) and writing.
#include "model/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json.h"

namespace narwhal {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own limit

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry, size_t data_bytes,
                       const unsigned char* data_start) {
  auto where = [&] { return cat(path, ": tensor '", name, "'"); };
  NW_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") && entry.contains("data_offsets"),
           where(), ": header entry needs dtype, shape and data_offsets");
  TensorInfo info;
  info.name = name;
  NW_CHECK(entry["dtype"].is_string(), where(), ": dtype must be a string");
  std::string dtype = entry["dtype"].get<std::string>();
  NW_CHECK(parse_dtype(dtype, &info.dtype), where(), ": unsupported dtype '", dtype,
           "' (supported: F32, BF16, F16, F8_E4M3, I32, I64)");
  const json& shape = entry["shape"];
  NW_CHECK(shape.is_array(), where(), ": shape must be a list");
  uint64_t numel = 1;
  for (const json& d : shape) {
    NW_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where(),
             ": shape holds ", d.dump(), ", not a non-negative integer");
    info.shape.push_back(d.get<int64_t>());
    numel *= static_cast<uint64_t>(info.shape.back());
  }
  const json& off = entry["data_offsets"];
  NW_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), where(),
           ": data_offsets must be two non-negative integers");
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  NW_CHECK(begin <= end && end <= data_bytes, where(), ": data_offsets [", begin, ", ", end,
           "] run past the end of the file (", data_bytes, " data bytes): the file is truncated or corrupt");
  NW_CHECK(end - begin == numel * dtype_size(info.dtype), where(), ": shape ", shape_to_string(info.shape), " of ",
           dtype, " needs ", numel * dtype_size(info.dtype), " bytes but data_offsets span ", end - begin);
  info.data = data_start + begin;
  info.nbytes = end - begin;
  return info;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  NW_CHECK(map_.size() >= 8, path, ": too small to be a safetensors file (", map_.size(), " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_.data()[i];
  NW_CHECK(header_len <= kMaxHeaderBytes && header_len <= map_.size() - 8, path, ": header length ", header_len,
           " exceeds the file size (", map_.size(), " bytes): not a safetensors file, or truncated");
  json header;
  try {
    header = json::parse(map_.data() + 8, map_.data() + 8 + header_len);
  } catch (const json::parse_error& e) {
    throw Error(cat(path, ": bad safetensors header (invalid JSON): ", e.what()));
  }
  NW_CHECK(header.is_object(), path, ": bad safetensors header: expected a JSON object");
  const unsigned char* data_start = map_.data() + 8 + header_len;
  size_t data_bytes = map_.size() - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    TensorInfo info = parse_entry(path, name, entry, data_bytes, data_start);
    info.file = &map_.path();
    tensors_.emplace(name, std::move(info));
  }
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  NW_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a model directory with config.json)");
  fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  fs::path single_path = fs::path(dir) / "model.safetensors";
  if (fs::exists(index_path)) {
    lookup_source_ = index_path.string();
    json index = read_json_file(lookup_source_);
    NW_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), lookup_source_,
             ": missing object 'weight_map'");
    std::map<std::string, size_t> shard_slot;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      NW_CHECK(shard.is_string(), lookup_source_, ": weight_map['", name, "'] must be a file name");
      std::string file = shard.get<std::string>();
      NW_CHECK(file.find('/') == std::string::npos && file != ".." && !file.empty(), lookup_source_,
               ": weight_map['", name, "'] = '", file, "' is not a file name in the model directory");
      if (!shard_slot.count(file)) {
        shard_slot[file] = files_.size();
        files_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / file).string()));
      }
      const SafetensorsFile& sf = *files_[shard_slot[file]];
      auto it = sf.tensors().find(name);
      NW_CHECK(it != sf.tensors().end(), lookup_source_, ": tensor '", name, "' is mapped to ", sf.path(),
               ", which does not contain it");
      by_name_[name] = &it->second;
    }
  } else {
    NW_CHECK(fs::exists(single_path), dir, ": no model.safetensors or model.safetensors.index.json");
    lookup_source_ = single_path.string();
    files_.push_back(std::make_unique<SafetensorsFile>(lookup_source_));
    for (const auto& [name, info] : files_[0]->tensors()) by_name_[name] = &info;
  }
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

size_t Checkpoint::overlay(const std::string& dir, const std::string& prefix) {
  NW_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a checkpoint directory)");
  std::vector<std::string> paths;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  size_t taken = 0;
  for (const std::string& path : paths) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& [name, info] : files_.back()->tensors())
      if (name.rfind(prefix, 0) == 0) {
        by_name_[name] = &info;
        ++taken;
      }
  }
  return taken;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  NW_CHECK(info != nullptr, lookup_source_, ": missing tensor '", name, "'");
  return *info;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  json header = json::object();
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned, as the reference writer does
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  NW_CHECK(out.good(), path, ": cannot open for writing");
  uint64_t len = text.size();
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));
  out.write(reinterpret_cast<const char*>(len_bytes), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors) out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes()));
  NW_CHECK(out.good(), path, ": write failed");
}

}  // namespace narwhal
