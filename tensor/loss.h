// Losses. Sums are accumulated in double and the result is returned as double; gradients are
// written (=). dloss is the gradient arriving from above (1 for a loss that is the final output).
//
// Cross-entropy with an ignored label, fused with log-softmax (never materialises probabilities):
//   lse_n  = log sum_v exp(logits[n,v])                            (saved: lse (N))
//   loss   = (1/M) sum_{n: target_n != ignore} (lse_n - logits[n, target_n]),  M = #counted rows
//   dlogits[n,v] = dloss/M (softmax(logits_n)_v - [v == target_n]),  0 for ignored rows
//   PyTorch: F.cross_entropy(logits, targets, ignore_index=-100)
// With every row ignored M = 0: PyTorch returns NaN; we return 0 and a zero gradient, because a
// packed chunk without labels carries no signal and must not poison a running loss.
//
// Mean squared error over n values:
//   loss = (1/n) sum (a - b)^2,    da = dloss 2 (a - b) / n,   db = -da
//
// Reductions to a scalar:  sum: dx = dy;   mean: dx = dy / n.
#pragma once
#include <cstdint>

namespace lolcats {

constexpr int kIgnoreIndex = -100;

template <typename T>
double cross_entropy_forward(T* lse, const T* logits, const int32_t* targets, int N, int V,
                             int ignore_index = kIgnoreIndex);
template <typename T>
void cross_entropy_backward(T* dlogits, double dloss, const T* logits, const T* lse,
                            const int32_t* targets, int N, int V, int ignore_index = kIgnoreIndex);

template <typename T> double mse_forward(const T* a, const T* b, int64_t n);
template <typename T> void mse_backward(T* da, T* db, double dloss, const T* a, const T* b, int64_t n);

template <typename T> double sum_forward(const T* x, int64_t n);
template <typename T> void sum_backward(T* dx, double dy, int64_t n);
template <typename T> double mean_forward(const T* x, int64_t n);
template <typename T> void mean_backward(T* dx, double dy, int64_t n);


// Tensor-level entry points (tensor/device.h). Losses come back as host doubles, or into a (1)
// tensor on the operands' device (the MSE's and the LM head's); their gradients are written. cross_entropy on materialised logits is the CPU's; on the cuda device the LM head's
// loss is fused and chunked over the vocabulary (lm_head_cross_entropy, cuda/cross_entropy.h), and
// the CPU runs the same function by materialising the logits.
class Tensor;
enum class Device : uint8_t;
double cross_entropy_forward(Tensor& lse, const Tensor& logits, const Tensor& targets, int ignore_index = kIgnoreIndex);
void cross_entropy_backward(Tensor& dlogits, double dloss, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, int ignore_index = kIgnoreIndex);
// targets (N) i32 for `device`: host targets going to the GPU are checked on the host (each in
// [0, V) or the ignore index; the error names the row) and uploaded, once, where a step begins, so
// that the loss need not wait; targets already there, or staying on the CPU (whose kernel checks
// them), are returned as they are.
Tensor checked_targets(const Tensor& targets, int V, Device device, int ignore_index = kIgnoreIndex);
// x (N, C), w (V, C) the head, targets (N) i32, lse (N) f32. dw (V, C) f32 accumulates (or null).
// The mean loss goes into `loss`, a (1) f32 tensor on x's device (no wait). Host targets are checked
// here (checked_targets); device targets were checked by whoever uploaded them, and a bad one makes
// the loss NaN.
void lm_head_cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& x, const Tensor& w,
                                   const Tensor& targets, int ignore_index = kIgnoreIndex);
void lm_head_cross_entropy_backward(Tensor* dx, Tensor* dw, double dloss, const Tensor& x, const Tensor& w,
                                    const Tensor& lse, const Tensor& targets, int ignore_index = kIgnoreIndex);
// The mean into `loss`, a (1) f32 tensor on the operands' device: a device loss stays there (no
// wait on the device) until someone reads it.
void mse_forward(Tensor& loss, const Tensor& a, const Tensor& b);
void mse_backward(Tensor* da, Tensor* db, double dloss, const Tensor& a, const Tensor& b);
double sum_forward(const Tensor& x);
void sum_backward(Tensor& dx, double dy);
double mean_forward(const Tensor& x);
void mean_backward(Tensor& dx, double dy);

}  // namespace lolcats
