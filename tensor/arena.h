// Arena: one allocation per category of memory (frozen weights, trainable parameters, their
// gradients, optimizer moments, activations), handed out as tensors by bumping an offset.
//
// Why: the optimizer can then update all parameters with one flat loop over one buffer, a whole
// category can be zeroed or saved at once, and the program can say exactly what it uses:
//   Arena grads("grads", Arena::bytes_for({{V, C}, {C}}));
//   Tensor dwte = grads.alloc({V, C});       // ... "arena grads: 36.0 MiB"
// Tensors from an arena share its allocation: it lives as long as any of them.
// In use today: the frozen weights of a Llama (nn/llama.cpp, on the model's device), and AdamW's
// parameters, gradients and moments (nn/adamw.h). Activations are every other tensor: counted per
// step by tensor/activations.h, their blocks reused by the allocator (on a GPU its caching
// allocator, so a step makes no cudaMalloc); that file says why they are not one bump arena.
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace lolcats {

class Arena {
 public:
  static constexpr size_t kAlign = 64;  // every tensor starts on a cache line

  Arena(std::string name, size_t capacity_bytes, DType dtype = DType::f32,
        Device device = Device::cpu);
  // Bytes needed for these shapes (all of `dtype`), alignment padding included.
  static size_t bytes_for(const std::vector<Shape>& shapes, DType dtype = DType::f32);

  Tensor alloc(const Shape& shape);  // uninitialised; checks capacity
  void reset() { used_ = 0; }        // reuse the memory (e.g. activations of the next step)
  void zero_();                      // zero the whole buffer

  // The used part of the arena as one flat tensor: what a fused optimizer loop walks over.
  Tensor flat() const;
  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }
  const std::string& name() const { return name_; }
  std::string report() const;  // "arena grads: 36.00 MiB used of 36.00 MiB"

 private:
  std::string name_;
  Tensor buffer_;  // owns the single allocation
  size_t capacity_;
  size_t used_ = 0;
  DType dtype_;
};

}  // namespace lolcats
