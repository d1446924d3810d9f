// LoRA (Hu et al. 2021): a frozen weight W (out, in) plus a trainable low-rank update,
//   y = x W^T + (alpha / r) (x A^T) B^T        A (r, in), B (out, r)
//   PyTorch (peft): base(x) + lora_B(lora_A(dropout(x))) * scaling
// A starts Kaiming-uniform (bound 1/sqrt(in), what torch.nn.init.kaiming_uniform_(a=sqrt(5))
// gives), B starts at zero, so training begins exactly at the base model.
#pragma once
#include <cstdint>
#include <string>

#include "autograd/tape.h"

namespace lolcats {

struct Lora {
  Var A;  // (r, in)
  Var B;  // (out, r)
  float scale = 0;  // alpha / r
  bool active() const { return A != nullptr; }
};

Lora make_lora(int in, int out, int rank, float alpha, uint64_t seed);

// The seed of one LoRA site's random stream: a hash of the run's seed and the site's full
// parameter name ("model.layers.3.self_attn.o_proj"), so no two sites share a stream (a seed
// built by adding small numbers, like seed + 4 l + 'o', repeats as 4 (l+1) + 'k').
uint64_t lora_seed(uint64_t seed, const std::string& name);

// x (..., in) -> (..., out): x W^T, plus the LoRA term when `lora` is active.
Var linear_lora(const Var& x, const Var& W, const Lora& lora);

// W += scale * B A in place (for export with the update merged).
void merge_lora(const Var& W, const Lora& lora);

}  // namespace lolcats
