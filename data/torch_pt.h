// PyTorch checkpoints (`torch.save`, the zip format of PyTorch >= 1.6): tensors only.
//
// A .pt file is a zip archive (data/zip_store.h) of stored entries under one folder, PREFIX/:
//   PREFIX/data.pkl      the pickled object (protocol 2 by default), e.g. {'model_state_dict':
//                        OrderedDict(name -> tensor), 'step': 1200}
//   PREFIX/data/N        the raw bytes of storage N (little-endian)
//   PREFIX/byteorder     "little"; PREFIX/version, .format_version, ... (not needed)
// In the pickle a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
// requires_grad, hooks)` (or _rebuild_tensor_v3 with an untyped storage and the dtype as its 7th
// argument; nn.Parameter wraps either in _rebuild_parameter), and a storage is a persistent id
// ('storage', torch.FloatStorage | BFloat16Storage | HalfStorage | ... | UntypedStorage, 'N',
// location, numel). This reader runs a small pickle machine for the opcodes that state dicts use
// (dicts, lists, tuples, strings, numbers, globals, REDUCE, BUILD, memo, persistent ids) and
// treats every other global as an opaque object: it never imports or runs anything, as
// torch.load(weights_only=True) does not.
//
// The tensors are those of the state dict: the top-level dict's `model_state_dict` or
// `state_dict` entry when it holds a dict (as the LoLCATs reference and most trainers save),
// else the top-level dict; entries that are not tensors are skipped. Names keep the file's keys.
// Any fault (wrong magic, truncation, unknown opcode, a storage or offset out of range) is one
// error naming the file, never a crash (tests/fuzz/fuzz_torch_pt.cpp).
#pragma once
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/mapped_file.h"
#include "data/zip_store.h"
#include "tensor/tensor.h"

namespace lolcats {

struct TorchTensorInfo {
  std::string dtype;              // "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;   // in elements
  int64_t storage_offset = 0;     // in elements
  std::string storage;            // the archive entry holding the storage, e.g. "archive/data/0"
  bool contiguous = true;         // row-major with these strides (size-1 dimensions ignored)
  const uint8_t* data = nullptr;  // the first element, inside the mapping
  size_t nbytes = 0;              // numel * element size
  int64_t numel() const;
};

class TorchCheckpoint {
 public:
  explicit TorchCheckpoint(const std::string& path);
  ~TorchCheckpoint();
  TorchCheckpoint(const TorchCheckpoint&) = delete;
  TorchCheckpoint& operator=(const TorchCheckpoint&) = delete;

  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const TorchTensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& path() const { return path_; }
  // Where the state dict was: "model_state_dict", "state_dict", or "" (the top-level dict).
  const std::string& state_dict_key() const { return state_dict_key_; }

  // A copy, F32/BF16/F16/F64 as f32, I32/I64 as i32. Refuses a tensor that is not contiguous or
  // has more than 4 dimensions, with one line naming it.
  Tensor load(const std::string& name) const;
  // Into dst, which must have the stored shape; converts the dtype (bf16 stays bf16 into bf16).
  void load_into(const std::string& name, Tensor& dst) const;

 private:
  void parse();
  const uint8_t* tensor_bytes(const std::string& name, const TorchTensorInfo& t) const;  // CRC checked once
  std::string path_;
  MappedFile file_;  // the whole file, mapped (parsed in place)
  std::unique_ptr<ZipReader> zip_;
  std::map<std::string, TorchTensorInfo> tensors_;
  std::string state_dict_key_;
  mutable std::set<std::string> verified_;  // storages whose CRC-32 was checked
};

// Writes tensors (f32, bf16 or i32; CPU or cuda) as `torch.save(obj, path)` of PyTorch 2 writes
// them, obj = {wrap_key: OrderedDict(name -> tensor)} or, with wrap_key "", the bare OrderedDict;
// each tensor gets its own storage. Atomic (a temporary file, then a rename). torch.load and the
// LoLCATs reference's loaders (torch.load(path)['model_state_dict']) read it.
void save_torch_state_dict(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                           const std::string& wrap_key = "model_state_dict");

}  // namespace lolcats
