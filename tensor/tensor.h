// Tensor: a shape (up to 4-D), a dtype, a device and a pointer to contiguous row-major storage.
//
// Deliberately small. There are no strides and no broadcasting: a view (reshape, rows, view) is a
// contiguous piece of another tensor's storage. Kernels take raw pointers and explicit sizes
// (tensor/*.h), and a Tensor only carries the buffer and checks that callers agree on its shape.
// Storage is either owned (Tensor::empty / zeros, freed with the last tensor that refers to it,
// views included: rows(), view(), an Arena's pieces) or borrowed (Tensor::borrow: memory someone
// else keeps alive, e.g. a memory-mapped file).
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "tensor/check.h"

namespace lolcats {

enum class DType : uint8_t { f32, bf16, i32 };
enum class Device : uint8_t { cpu, cuda };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

struct Shape {
  int ndim = 0;
  int64_t dims[4] = {0, 0, 0, 0};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  explicit Shape(const std::vector<int64_t>& d);
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "(2, 3, 4)"
};

class Tensor {
 public:
  Tensor() = default;
  // Owned, uninitialised / zero-filled storage.
  // Counted as activations (tensor/activations.h) unless allocated for an Arena (untracked).
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor empty_untracked(const Shape& shape, DType dtype, Device device);
  // Owns `data` (freed with `free` when the last tensor sharing it goes).
  static Tensor adopt(void* data, const Shape& shape, DType dtype, Device device, std::function<void(void*)> free);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  // Borrowed storage: the caller (an Arena, a memory-mapped file) keeps `data` alive.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device = Device::cpu);
  // CPU f32 tensor holding a copy of `values` (tests and small constants).
  static Tensor from(const std::vector<float>& values, const Shape& shape);
  static Tensor from_i32(const std::vector<int32_t>& values, const Shape& shape);

  bool defined() const { return data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim; }
  int64_t size(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* data() const { return data_; }
  // Typed pointers. A pointer of the wrong dtype or device cannot be taken: f32() / bf16() / i32()
  // are CPU pointers, dev<T>() is a cuda pointer (T = float, cuda::bf16 or int32_t); each checks.
  float* f32() const { return typed<float>(DType::f32, Device::cpu); }
  uint16_t* bf16() const { return typed<uint16_t>(DType::bf16, Device::cpu); }
  int32_t* i32() const { return typed<int32_t>(DType::i32, Device::cpu); }
  template <typename T>
  T* dev() const;

  // Same storage, new shape with the same number of elements.
  Tensor reshape(const Shape& shape) const;
  // Rows start .. start+n-1 of the first dimension: a view sharing this tensor's storage (it keeps
  // an owned buffer alive), e.g. the slots of a KV cache that new keys are written into.
  Tensor rows(int64_t start, int64_t n) const;
  // `shape` elements of this tensor's dtype from element `offset` of its (flat) storage: a view
  // sharing the storage, as an Arena hands out its pieces.
  Tensor view(int64_t offset, const Shape& shape) const;
  // A deep copy on the same device (converting nothing).
  Tensor clone() const;
  // A copy on `device` in `dtype` (f32 <-> bf16 round to nearest even), or this tensor itself when
  // it already is on that device in that dtype.
  Tensor to(Device device, DType dtype) const;
  Tensor to(Device device) const { return to(device, dtype_); }
  // Overwrites this tensor's values with src's (same shape and dtype, else one error line naming
  // `what`; any devices). Loaders use it to fill a model's preallocated parameters.
  void copy_from(const Tensor& src, const std::string& what);
  void zero_();
  std::vector<float> to_vector() const;  // f32 or bf16, any device, widened to f32
  std::string str() const;                // "f32 (2, 3) cpu"

 private:
  template <typename T>
  T* typed(DType want, Device where) const {
    ENSURE(dtype_ == want && device_ == where, "tensor is %s on %s, not %s on %s", dtype_name(dtype_),
           device_name(device_), dtype_name(want), device_name(where));
    return static_cast<T*>(data_);
  }
  std::shared_ptr<void> storage_;  // null when borrowed
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

// ENSURE that t has exactly this shape and dtype, naming the tensor in the message.
void check_shape(const Tensor& t, const Shape& want, const char* name, DType dtype = DType::f32);

// Device memory hooks. With CUDA built in, cuda/memory.cu provides them; without, tensor/no_cuda.cpp
// provides versions that fail with a clear message.
void* device_malloc(size_t bytes);
void device_free(void* p);
void device_memset_zero(void* p, size_t bytes);
void device_upload(void* device_dst, const void* host_src, size_t bytes);
void device_download(void* host_dst, const void* device_src, size_t bytes);
void device_copy(void* device_dst, const void* device_src, size_t bytes);
// n values from src (of src_type) to dst (of dst_type) on the device: f32 <-> bf16 casts or a copy.
void device_convert(void* dst, DType dst_type, const void* src, DType src_type, int64_t n);
bool cuda_available();  // built with CUDA and a GPU is visible (or the emulator built in)
void device_synchronize();  // waits for the device's queued work (timing)
// Device memory held by tensors now, at most so far, and kept for reuse (a real GPU's allocator
// caches freed blocks; see cuda/memory.cu). Zeros when there is no such cache.
struct DeviceMemoryStats {
  size_t in_use = 0, peak = 0, cached = 0;
};
DeviceMemoryStats device_memory_stats();
void device_memory_reset_peak();  // the peak starts again from what is in use now
// What the device's driver reports free and in total now (cudaMemGetInfo; creates the CUDA
// context if there is none yet). Memory this process's allocator caches counts as used.
struct DeviceMemoryInfo {
  size_t free = 0, total = 0;
};
DeviceMemoryInfo device_memory_info();

}  // namespace lolcats
