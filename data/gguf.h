// GGUF: the single-file model format of llama.cpp / ggml (version 3; version 2 reads the same).
// All integers little-endian:
//   "GGUF" u32 version  u64 tensor_count  u64 kv_count
//   kv_count x   { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to `general.alignment` (a u32 key, default 32), then the tensor data section.
// A string is u64 length + bytes (no terminator). A value is a scalar of its type, a string, or an
// array: u32 element type + u64 count + elements. ne[0] is the fastest-varying dimension (ggml's
// order); we report shapes in PyTorch order, i.e. ne reversed: a Linear weight with ne = (in, out)
// has shape (out, in). A tensor's offset is relative to the data section and a multiple of the
// alignment. Quantised types store blocks of consecutive elements along ne[0] (see gguf.cpp).
//
// GGUFFile memory-maps the file and validates every length, count, shape, type and offset before
// it returns, so no later call can read out of bounds; a malformed file gives one clear error
// naming the file and what is wrong. Metadata values are decoded from the map on each get_*().
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/mapped_file.h"
#include "tensor/tensor.h"

namespace lolcats {

// ggml tensor types (ggml.h: enum ggml_type). Only those named here are dequantised; the others
// are known by number (see ggml_type_name) so that errors can name them.
enum class GGUFType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };

struct GGUFTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch order (slowest first) = GGUF's ne[] reversed
  uint32_t type = 0;           // ggml type id (GGUFType for the supported ones)
  const uint8_t* data = nullptr;  // inside the memory map
  size_t nbytes = 0;
  int64_t numel() const;
};

class GGUFFile {
 public:
  explicit GGUFFile(const std::string& path);  // mmaps and validates everything up front
  GGUFFile(const GGUFFile&) = delete;
  GGUFFile& operator=(const GGUFFile&) = delete;

  uint32_t version() const { return version_; }

  // Metadata. Each getter names the key and its actual type when the type does not fit.
  bool has(const std::string& key) const { return kvs_.count(key) > 0; }
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;    // any integer type (u8..i64), bool too
  double get_float(const std::string& key) const;   // f32/f64 (and integers)
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  std::vector<std::string> keys() const { return key_order_; }  // in file order

  // Tensors.
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) > 0; }
  const GGUFTensorInfo& tensor(const std::string& name) const;
  std::vector<std::string> tensor_names() const;  // in file order
  // Dequantised to a CPU f32 Tensor of `shape`. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
  Tensor load_f32(const std::string& name) const;

  const std::string& path() const { return path_; }

 private:
  // Where a metadata value lies in the map (its extent was validated at open).
  struct Value {
    uint32_t type = 0;       // GGUF value type (0..12)
    uint32_t elem_type = 0;  // for arrays
    uint64_t count = 0;      // for arrays
    size_t offset = 0;       // of the payload (scalar, string, or first array element)
  };
  void parse();  // the constructor's work, once the file is mapped
  const Value& value(const std::string& key) const;
  std::string type_str(const Value& v) const;  // "UINT32", "ARRAY of STRING", ...

  std::string path_;
  MappedFile file_;  // the whole file, mapped (parsed in place)
  uint32_t version_ = 0;
  std::map<std::string, Value> kvs_;
  std::vector<std::string> key_order_;
  std::vector<GGUFTensorInfo> tensors_;  // in file order
  std::map<std::string, size_t> tensor_index_;
};

const char* ggml_type_name(uint32_t type);  // "Q4_K", "F16", ... or "unknown"

}  // namespace lolcats
