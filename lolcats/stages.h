// The two training stages of LoLCATs, as loops over the Llama's pieces (nn/llama.h), and the
// functions train_stage (lolcats/trainer.h) runs for each.
//
// Stage 1, attention transfer (LOLCATS.md 3), as the paper writes it: in every layer the
// teacher's softmax attention and the student's hybrid attention read the same q, k, v; the
// student learns the teacher's output by MSE; the teacher's output goes on (teacher forcing):
//
//   x = embed(ids)
//   for each layer l:
//     q, k, v = attention_inputs(l, x)               frozen weights: no graph
//     y_true  = softmax_attention(q, k, v)           the teacher, under NoGrad
//     y_pred  = hybrid_attention(phi_q(q), phi_k(k), q, k, v)   the student (converted layers)
//     loss_l  = 1000 / L_conv * MSE(y_pred, y_true)  per head, before Wo
//     backward(loss_l)                               now: its graph is this layer's alone
//     x = mlp_residual(l, attention_residual(l, x, y_true))
//
// Because each layer's graph starts at its own q, k, v (no gradient crosses layers), its backward
// runs as soon as its loss is known and the graph is freed: the memory of a step is one layer's
// (so recomputation, which stage 2 uses on the GPU, would buy stage 1 nothing).
//
// Stage 2, LoRA (LOLCATS.md 4): the feature maps frozen, LoRA on q, k, v, o, the student's loop
// (LolcatsModel::hidden: the Llama's loop with hybrid attention in the converted layers) trained on
// next-token cross-entropy end to end:
//
//   x = embed(ids)
//   for each layer l:   x = mlp_residual(l, attention_residual(l, x, student_attention(l, q, k, v)))
//   loss = cross_entropy(logits(x), targets)         prompt tokens ignored (-100)
//   backward(loss)                                    through every layer
#pragma once
#include <vector>

#include "data/alpaca.h"
#include "lolcats/model.h"

namespace lolcats {

struct TransferResult {
  float loss = 0;                // 1000 * mean MSE over the converted layers
  std::vector<float> layer_mse;  // (L) MSE of each converted layer (0 for a layer kept as softmax)
  Var hidden;                    // the last hidden states (B, T, C): the teacher's own
};

// The loop above over ids (B, T), nothing read back from the device: each converted layer's MSE, a
// (1) f32 tensor (undefined for a layer kept as softmax), and the loss, summed on the device.
struct TransferLosses {
  std::vector<Tensor> layer_mse;
  Tensor loss;  // 1000 * mean MSE over the converted layers, (1) f32
  Var hidden;
};
TransferLosses transfer_losses(const LolcatsModel& model, const Tensor& ids, float loss_scale);

// The same, read back (one wait on the device). While gradients are recorded, each layer's loss_l is
// differentiated with d(loss_scale * loss) = loss_scale into the feature maps' and window factors'
// gradients (loss_scale = 1 / gradient-accumulation steps); under NoGrad nothing is.
TransferResult attention_transfer(const LolcatsModel& model, const Tensor& ids, float loss_scale);

// For train_stage (lolcats/trainer.h): one chunk's transfer loss, its gradient added in, and the
// same loss without gradients.
Tensor transfer_train_chunk(const LolcatsModel& model, const Tensor& ids, float loss_scale);
double transfer_eval_chunk(const LolcatsModel& model, const Tensor& ids);

// For train_stage: stage 2's loss of one chunk, its gradient added in (with `recompute`, each layer
// runs again in the backward), and the same loss without gradients.
Tensor lora_train_chunk(const LolcatsModel& model, const Tensor& ids, const Tensor& targets, float loss_scale,
                        Recompute recompute);
double lora_eval_chunk(const LolcatsModel& model, const Tensor& ids, const Tensor& targets);

// Each layer's attention MSE x1000 (as in the loss) averaged over the first n chunks (all when
// n <= 0), and their mean over the converted layers (the loss).
std::vector<double> transfer_mse_per_layer(const LolcatsModel& model, const Chunks& chunks, int n);
double converted_mean(const LolcatsModel& model, const std::vector<double>& per_layer);

}  // namespace lolcats
