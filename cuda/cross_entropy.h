// Cross-entropy of the LM head on the GPU, fused with the head's matmul and chunked over the
// vocabulary, so that the (N, V) logit matrix (N = 8192 tokens x V = 128k words is 4 GiB in f32) is
// never whole in memory: only an (N, chunk) slice of it at a time.
//
//   logits (N, V) = x (N, C) @ w (V, C)^T                       w: the LM head (or tied embedding)
//   lse_n  = log sum_v exp(logits[n, v])       online over the chunks: a running max m_n and a
//                                              running sum s_n of exp(logit - m_n), rescaled
//                                              whenever m_n grows                  (saved: lse (N))
//   loss   = (1/M) sum_{n: target_n != ignore} (lse_n - logits[n, target_n])     M = counted rows
// Backward, chunk by chunk again (the logits are recomputed, not stored):
//   dlogits[n, v] = dloss/M (exp(logits[n, v] - lse_n) - [v == target_n]),  0 on ignored rows
//   dx (N, C)      = sum over chunks of dlogits (N, Vc) @ w[chunk] (Vc, C)   (f32 sum, then cast)
//   dw[chunk]     += dlogits^T (Vc, N) @ x (N, C)                             (when dw is given)
// The math and the CPU twin: tensor/loss.h (cross_entropy_forward / cross_entropy_backward on
// materialised logits). With every row ignored (M = 0) the loss and the gradients are 0, as there.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/api.h"

namespace lolcats::cuda {

// Device scratch the two functions need for these sizes; `chunk` vocabulary columns at a time.
size_t lm_head_cross_entropy_workspace(int N, int C, int chunk);
// A chunk that keeps the (N, chunk) f32 logit slice near `slice_bytes` (a multiple of 64, <= V).
int lm_head_chunk(int N, int V, size_t slice_bytes = size_t(256) << 20);

// loss: one device f32; lse (N) f32. T = float or bf16 (x and w). Never waits for the device: an
// out-of-range target (not ignore_index) makes the loss NaN and is recorded in the workspace, where
// lm_head_cross_entropy_bad_row finds it (the Tensor level checks host targets before the upload).
template <typename T>
void lm_head_cross_entropy_forward(float* loss, float* lse, const T* x, const T* w,
                                   const int32_t* targets, int N, int C, int V, int ignore_index,
                                   int chunk, void* workspace, Stream stream = nullptr);

// The first row whose target was out of range in the last forward on this workspace, or -1. Waits
// for the stream (a diagnostic, not for the training step).
int lm_head_cross_entropy_bad_row(const void* workspace, int N, int C, int chunk, Stream stream = nullptr);

// dx (N, C) written; dw (V, C) f32 accumulated, or null (a frozen head). dloss: d(total)/d(loss).
template <typename T>
void lm_head_cross_entropy_backward(T* dx, float* dw, float dloss, const T* x, const T* w,
                                    const float* lse, const int32_t* targets, int N, int C, int V,
                                    int ignore_index, int chunk, void* workspace,
                                    Stream stream = nullptr);

}  // namespace lolcats::cuda
