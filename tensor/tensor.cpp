#include "tensor/tensor.h"
#include "tensor/op_profile.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <malloc.h>

#include "tensor/activations.h"
#include "tensor/bf16.h"

namespace lolcats {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

Shape::Shape(std::initializer_list<int64_t> d) : Shape(std::vector<int64_t>(d)) {}

Shape::Shape(const std::vector<int64_t>& d) {
  ENSURE(d.size() <= 4, "tensors have at most 4 dimensions, got %zu", d.size());
  ndim = int(d.size());
  for (int i = 0; i < ndim; i++) {
    ENSURE(d[i] >= 0, "negative dimension %lld", (long long)d[i]);
    dims[i] = d[i];
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; i++)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < ndim; i++) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (ndim == 1 ? ",)" : ")");
}

namespace {
// Training frees and allocates the same large activations every step. glibc serves blocks above
// its mmap threshold (at most 32 MiB) with fresh mappings and unmaps them on free, so every step
// faulted each page of them in again: 12-15% of a SmolLM2 forward+backward went to the kernel's
// page-fault path (perf record on ./bench llama). Served from the heap and kept there after free
// (trimmed only when 1 GiB lies free at its top), the next step reuses them: forward+backward about
// 8% faster, results unchanged. The process's peak memory is the same; it is just not handed back
// between steps.
void keep_freed_memory() {
  static const bool once = [] {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, int(1) << 30);
    return true;
  }();
  (void)once;
}
}  // namespace

// ---- the activations ledger (tensor/activations.h) ------------------------------------------------
namespace {
struct Ledger {
  std::atomic<int64_t> live{0}, at_begin{0}, peak{0}, allocated{0}, tensors{0};
  void add(int64_t bytes) {
    const int64_t now = live.fetch_add(bytes) + bytes;
    allocated.fetch_add(bytes);
    tensors.fetch_add(1);
    int64_t p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  }
};
Ledger& ledger(Device d) {
  static Ledger l[2];
  return l[d == Device::cpu ? 0 : 1];
}
}  // namespace

ActivationStats activation_stats(Device d) {
  Ledger& l = ledger(d);
  return {l.live.load(), l.at_begin.load(), l.peak.load(), l.allocated.load(), l.tensors.load()};
}

void begin_step(Device d) {
  Ledger& l = ledger(d);
  const int64_t now = l.live.load();
  l.at_begin = now;
  l.peak = now;
  l.allocated = 0;
  l.tensors = 0;
}

std::string activation_report(Device d) {
  const ActivationStats s = activation_stats(d);
  return strfmt("activations: %.1f MiB peak in the step (%lld tensors, %.2f GiB allocated; %.1f MiB live before)",
                s.step_peak() / 1048576.0, (long long)s.tensors, s.allocated / 1073741824.0, s.at_begin / 1048576.0);
}

namespace {
Tensor allocate(const Shape& shape, DType dtype, Device device, bool tracked) {
  keep_freed_memory();
  Tensor t = Tensor::borrow(nullptr, shape, dtype, device);
  const size_t bytes = t.nbytes();
  void* p = nullptr;
  if (device == Device::cpu) {
    // 64-byte alignment: a full cache line, and enough for any SIMD load Eigen emits.
    p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    ENSURE(p, "out of memory allocating %zu bytes on the CPU", bytes);
  } else {
    p = device_malloc(bytes);
  }
  if (!tracked) return Tensor::adopt(p, shape, dtype, device, device == Device::cpu ? std::free : device_free);
  ledger(device).add(int64_t(bytes));
  return Tensor::adopt(p, shape, dtype, device, [device, bytes](void* q) {
    ledger(device).live.fetch_sub(int64_t(bytes));
    if (device == Device::cpu) std::free(q);
    else device_free(q);
  });
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return allocate(shape, dtype, device, true); }

Tensor Tensor::empty_untracked(const Shape& shape, DType dtype, Device device) {
  return allocate(shape, dtype, device, false);
}

Tensor Tensor::adopt(void* data, const Shape& shape, DType dtype, Device device, std::function<void(void*)> free) {
  Tensor t = borrow(data, shape, dtype, device);
  t.storage_ = std::shared_ptr<void>(data, std::move(free));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

static size_t nbytes_of(const Shape& s, DType t) { return size_t(s.numel()) * dtype_size(t); }

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::from(const std::vector<float>& values, const Shape& shape) {
  ENSURE(int64_t(values.size()) == shape.numel(), "%zu values for shape %s", values.size(),
        shape.str().c_str());
  Tensor t = empty(shape);
  std::memcpy(t.data_, values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::from_i32(const std::vector<int32_t>& values, const Shape& shape) {
  ENSURE(int64_t(values.size()) == shape.numel(), "%zu values for shape %s", values.size(),
        shape.str().c_str());
  Tensor t = empty(shape, DType::i32);
  std::memcpy(t.data_, values.data(), values.size() * 4);
  return t;
}

int64_t Tensor::size(int i) const {
  if (i < 0) i += shape_.ndim;
  ENSURE(i >= 0 && i < shape_.ndim, "dimension %d out of range for shape %s", i, shape_.str().c_str());
  return shape_.dims[i];
}

Tensor Tensor::reshape(const Shape& shape) const {
  ENSURE(shape.numel() == numel(), "cannot reshape %s to %s", shape_.str().c_str(),
        shape.str().c_str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

template <>
float* Tensor::dev<float>() const { return typed<float>(DType::f32, Device::cuda); }
template <>
cuda::bf16* Tensor::dev<cuda::bf16>() const { return typed<cuda::bf16>(DType::bf16, Device::cuda); }
template <>
int32_t* Tensor::dev<int32_t>() const { return typed<int32_t>(DType::i32, Device::cuda); }

Tensor Tensor::rows(int64_t start, int64_t n) const {
  ENSURE(shape_.ndim >= 1 && start >= 0 && n >= 0 && start + n <= shape_[0],
         "rows %lld..%lld of a tensor of shape %s", (long long)start, (long long)(start + n),
         shape_.str().c_str());
  Tensor t = *this;
  t.shape_.dims[0] = n;
  t.data_ = static_cast<char*>(data_) + size_t(start) * (shape_[0] ? nbytes() / size_t(shape_[0]) : 0);
  return t;
}

Tensor Tensor::view(int64_t offset, const Shape& shape) const {
  ENSURE(offset >= 0 && offset + shape.numel() <= numel(), "a view of %lld elements at %lld of a tensor of %lld",
         (long long)shape.numel(), (long long)offset, (long long)numel());
  Tensor t = *this;
  t.shape_ = shape;
  t.data_ = static_cast<char*>(data_) + size_t(offset) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  if (device_ == Device::cpu) std::memcpy(t.data_, data_, nbytes());
  else {
    OpTimer timer(OpKind::other, 0, 2.0 * nbytes());
    device_copy(t.data_, data_, nbytes());
  }
  return t;
}

// f32 <-> bf16 on the CPU (the device converts with its cast kernels, in device_convert).
static void convert_on_cpu(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) {
    std::memcpy(dst, src, size_t(n) * dtype_size(dt));
  } else if (st == DType::f32 && dt == DType::bf16) {
    for (int64_t i = 0; i < n; i++) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(static_cast<const float*>(src)[i]);
  } else if (st == DType::bf16 && dt == DType::f32) {
    for (int64_t i = 0; i < n; i++) static_cast<float*>(dst)[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
  } else {
    ENSURE(false, "no conversion from %s to %s", dtype_name(st), dtype_name(dt));
  }
}

Tensor Tensor::to(Device device, DType dtype) const {
  if (device == device_ && dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device);
  if (device_ == Device::cpu && device == Device::cpu) {
    convert_on_cpu(out.data_, dtype, data_, dtype_, numel());
  } else if (device_ == Device::cuda && device == Device::cuda) {
    OpTimer timer(OpKind::other, 0, double(nbytes() + out.nbytes()));
    device_convert(out.data_, dtype, data_, dtype_, numel());
  } else if (device == Device::cuda) {  // upload: convert on the CPU first (halves the bytes to bf16)
    Tensor host = dtype == dtype_ ? *this : to(Device::cpu, dtype);
    device_upload(out.data_, host.data_, nbytes_of(shape_, dtype));
  } else {  // download, then convert on the CPU
    Tensor host = empty(shape_, dtype_, Device::cpu);
    device_download(host.data_, data_, nbytes());
    out = host.to(Device::cpu, dtype);
  }
  return out;
}

void Tensor::zero_() {
  if (device_ == Device::cpu)
    std::memset(data_, 0, nbytes());
  else
    device_memset_zero(data_, nbytes());
}

std::vector<float> Tensor::to_vector() const {
  Tensor host = to(Device::cpu, DType::f32);
  const float* p = host.f32();
  return std::vector<float>(p, p + numel());
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + " " + shape_.str() + " " + device_name(device_);
}

void Tensor::copy_from(const Tensor& src, const std::string& what) {
  ENSURE(src.shape() == shape_, "%s has shape %s, but the config implies %s", what.c_str(),
         src.shape().str().c_str(), shape_.str().c_str());
  ENSURE(src.dtype() == dtype_, "%s has dtype %s, expected %s", what.c_str(), dtype_name(src.dtype()),
         dtype_name(dtype_));
  if (device_ == Device::cpu && src.device() == Device::cpu) std::memcpy(data_, src.data(), nbytes());
  else if (device_ == Device::cuda && src.device() == Device::cuda) device_copy(data_, src.data(), nbytes());
  else if (device_ == Device::cuda) device_upload(data_, src.data(), nbytes());
  else device_download(data_, src.data(), nbytes());
}

void check_shape(const Tensor& t, const Shape& want, const char* name, DType dtype) {
  ENSURE(t.shape() == want, "%s has shape %s, expected %s", name, t.shape().str().c_str(),
        want.str().c_str());
  ENSURE(t.dtype() == dtype, "%s has dtype %s, expected %s", name, dtype_name(t.dtype()),
        dtype_name(dtype));
}

}  // namespace lolcats
