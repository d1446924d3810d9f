// The CPU trunk of a decode step (nn/decoder.h) as plain code, llama2.c style: no autograd graph
// and no allocation once its buffers have grown to the largest step. Every linear layer runs as one
// matrix product over all the step's rows, so the weights are read once per step for the whole
// batch:
//
//   X = wte[tokens]                                           (R, d_model)
//   per layer:  A = rmsnorm(X);  Q, K, V = A Wq^T, A Wk^T, A Wv^T;  RoPE at each row's position
//               (the memory attends: Y)
//               X += Y Wo^T;  M = rmsnorm(X);  X += (silu(M Wg^T) * (M Wu^T)) Wd^T
//   logits = rmsnorm(X) Wlm^T                                 of the rows asked for
//
// Weights in f32, or in bf16 (Llama::to(Device::cpu, DType::bf16): half the bytes to read per
// token, widened to f32 block by block; all arithmetic stays f32). An active LoRA adds its low-rank
// term, (alpha / r) (x A^T) B^T, to its projection (or merge it first: merge_lora).
#pragma once
#include <memory>

#include "nn/decoder.h"

namespace lolcats {

std::unique_ptr<DecodeTrunk> make_cpu_decode_trunk(const Llama& model);

}  // namespace lolcats
