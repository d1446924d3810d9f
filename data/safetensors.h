// safetensors: the Hugging Face checkpoint format.
//   [8 bytes little-endian u64 N][N bytes JSON header][raw tensor bytes]
//   header: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//            "__metadata__": {"key": "value"}}       offsets are relative to the end of the header
// Reading memory-maps the file, so opening an 8B checkpoint costs nothing until tensors are used.
// Every offset and size is validated against the file before any byte is touched: a truncated or
// corrupt file gives one clear error naming the file and the tensor.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "data/mapped_file.h"
#include "tensor/tensor.h"

namespace lolcats {

struct SafeTensorInfo {
  std::string dtype;           // "F32", "F16", "BF16", "F64", "I32", "I64", ...
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the mapping
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::string& path);
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const SafeTensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  // Copies a tensor, converting F32/F16/BF16/F64 to f32 and I32/I64 to i32.
  Tensor load(const std::string& name) const;
  // Loads `name` into dst, which must already have the stored shape (a model's parameter): a missing
  // tensor or a shape mismatch is one error line naming the file and tensor.
  void load_into(const std::string& name, Tensor& dst) const;
  // Values as double (F32, F64, F16, BF16, I32, I64): test fixtures keep references in F64.
  std::vector<double> load_f64(const std::string& name) const;

 private:
  void parse();  // the constructor's work, once the file is mapped
  std::string path_;
  MappedFile file_;  // the whole file, mapped (parsed in place)
  std::map<std::string, SafeTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (f32 -> "F32", bf16 -> "BF16", i32 -> "I32"; on the CPU or the cuda device)
// atomically: to PATH.tmp, then renamed over PATH, so an interrupted write never leaves a
// half-written checkpoint.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `bytes` to `path` through a temporary file and a rename; a full disk or a missing folder
// is one clear error and leaves no partial file.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace lolcats
