// Read-only memory map of a whole file (checkpoint shards are mapped, never read into heap copies).
#pragma once

#include <cstddef>
#include <string>

namespace narwhal {

class MappedFile {
 public:
  // Throws Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace narwhal
