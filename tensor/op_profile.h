// Where a device step's time goes, by kind of op (./bench linearize-8b). Off unless a program turns
// it on; then each device op at the seam (tensor/device.h) is bracketed by two device events, and
// its work is counted: FLOPs and the bytes it must move at least, so that a kind's measured time
// can stand beside its floor (FLOPs over the card's peak, bytes over its bandwidth). The outermost
// bracket wins: the GEMMs inside a feature map count as the feature map's. The counts are the
// op's arithmetic as its math states it (a fused kernel's recomputation is not counted twice), so
// the floor is a lower bound, not a model of the kernel.
//
//   op_profile_begin();
//   ... one training step ...
//   OpProfile p = op_profile_end();    // waits for the device; p.ms[OpKind::gemm] ...
//
// Events are recorded on the stream the ops run on (the legacy stream); the profile is for one
// host thread at a time.
#pragma once
#include <array>
#include <initializer_list>

#include "tensor/tensor.h"

namespace lolcats {

enum class OpKind : int {
  gemm,               // matmuls (cuBLASLt), the LoRA's included
  hybrid_attention,   // the LoLCATs window + linear attention
  feature_map,        // Hedgehog / T2R maps, their GEMMs included
  teacher_attention,  // causal softmax attention
  norm_rope_swiglu,   // RMSNorm, RoPE, SwiGLU and the other elementwise ops
  loss,               // MSE, the LM head's fused cross-entropy (its logits GEMM included)
  optimizer,          // AdamW
  other,              // embedding lookups, casts
};
constexpr int kOpKinds = 8;
const char* op_kind_name(OpKind kind);

struct OpProfile {
  std::array<double, kOpKinds> ms{}, flops{}, bytes{};
  std::array<int, kOpKinds> calls{};
};

void op_profile_begin();      // clears the counts and starts bracketing
OpProfile op_profile_end();   // waits for the device, sums every bracket, stops
bool op_profile_on();

// Brackets one device op (a no-op unless profiling). flops, bytes: the op's work, for its floor.
class OpTimer {
 public:
  OpTimer(OpKind kind, double flops, double bytes);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int slot_ = -1;        // the bracket this timer opened, or -1 (profiling off, or nested)
  bool nested_ = false;  // opened inside another timer (counted in the depth, no bracket)
};

// The bytes of the tensors an op reads or writes (null ones skipped): an elementwise op's work.
inline double op_bytes(std::initializer_list<const Tensor*> ts) {
  double b = 0;
  for (const Tensor* t : ts)
    if (t && t->defined()) b += double(t->nbytes());
  return b;
}

// The device's time stamps (cuda/events.cu; the CPU-only build has none): an event recorded on
// the legacy stream now; the milliseconds between two, waiting for the second; its release.
void* device_event_record();
float device_event_ms(void* start, void* end);
void device_event_free(void* event);

}  // namespace lolcats
