// A file mapped read-only into memory: the first step of every checkpoint reader (safetensors, GGUF,
// PyTorch .pt), which then parse and validate the bytes in place and hand out pointers into them.
// One clear error when the file cannot be opened, is not a regular file or cannot be mapped; the
// mapping lives as long as the object (a reader holds it as a member, so a parse error that throws
// from the reader's constructor still unmaps it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lolcats {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }  // null for an empty file
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lolcats
