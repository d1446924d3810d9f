#include "tensor/arena.h"

namespace lolcats {

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

Arena::Arena(std::string name, size_t capacity_bytes, DType dtype, Device device)
    : name_(std::move(name)), capacity_(round_up(capacity_bytes, kAlign)), dtype_(dtype) {
  int64_t elems = int64_t(capacity_ / dtype_size(dtype));
  buffer_ = Tensor::empty_untracked({elems}, dtype, device);  // its own category, not an activation
}

size_t Arena::bytes_for(const std::vector<Shape>& shapes, DType dtype) {
  size_t total = 0;
  for (const Shape& s : shapes) total += round_up(size_t(s.numel()) * dtype_size(dtype), kAlign);
  return total;
}

Tensor Arena::alloc(const Shape& shape) {
  size_t bytes = round_up(size_t(shape.numel()) * dtype_size(dtype_), kAlign);
  ENSURE(used_ + bytes <= capacity_,
        "arena %s is full: %zu bytes used of %zu, %zu more requested for %s", name_.c_str(), used_,
        capacity_, bytes, shape.str().c_str());
  Tensor t = buffer_.view(int64_t(used_ / dtype_size(dtype_)), shape);
  used_ += bytes;
  return t;
}

void Arena::zero_() { buffer_.zero_(); }

Tensor Arena::flat() const { return buffer_.view(0, {int64_t(used_ / dtype_size(dtype_))}); }

std::string Arena::report() const {
  return strfmt("arena %s: %.2f MiB used of %.2f MiB", name_.c_str(), used_ / 1048576.0,
                capacity_ / 1048576.0);
}

}  // namespace lolcats
