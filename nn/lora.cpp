#include "nn/lora.h"

#include <cmath>
#include <random>

#include "autograd/ops.h"
#include "tensor/elementwise.h"
#include "tensor/matmul.h"

namespace lolcats {

Lora make_lora(int in, int out, int rank, float alpha, uint64_t seed) {
  Lora l;
  std::vector<float> a(size_t(rank) * in);
  std::mt19937_64 rng(seed);
  const double bound = 1.0 / std::sqrt(double(in));
  for (float& x : a)  // uniform in [-bound, bound), from the raw 64-bit draws (portable)
    x = float((double(rng() >> 11) / 9007199254740992.0 * 2.0 - 1.0) * bound);
  l.A = leaf(Tensor::from(a, {rank, in}), true);
  l.B = leaf(Tensor::zeros({out, rank}), true);
  l.scale = alpha / float(rank);
  return l;
}

uint64_t lora_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the name's bytes
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  uint64_t z = seed + h * 0x9E3779B97F4A7C15ull;  // splitmix64 finaliser: seed and name mixed
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Var linear_lora(const Var& x, const Var& W, const Lora& lora) {
  Var y = linear(x, W);
  if (!lora.active()) return y;
  return add(y, scale(linear(linear(x, lora.A), lora.B), lora.scale));
}

void merge_lora(const Var& W, const Lora& lora) {
  if (!lora.active()) return;
  const Tensor &A = lora.A->value, &B = lora.B->value;
  const int out = int(B.size(0)), r = int(B.size(1)), in = int(A.size(1));
  Tensor BA = Tensor::empty({out, in}, A.dtype(), A.device());
  matmul_forward(BA, B, A, 1, out, in, r);  // (out, r) @ (r, in)
  scale_forward(BA, BA, lora.scale);
  add_forward(W->value, W->value, BA);
}

}  // namespace lolcats
