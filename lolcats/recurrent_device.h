// The recurrent decode of lolcats/recurrent.h on the cuda device: the Llama trunk through the op
// layer (nn/decode_device.h) and, for each converted layer, one fused kernel that folds the keys
// leaving the window into S, z and attends (cuda/decode.h lolcats_decode_attention), then the ring
// write. State on the device: S (batch, H, F, D) and z (batch, H, F) in f32, the window ring
// (batch, 128, Hkv, D) in the weights' dtype; feature maps and window factors in f32. A prompt is
// prefilled by the same recurrence row after row (equal to the parallel form in exact mode, which
// is therefore the only mode here: reference mode prefills with the parallel kernel, not on the GPU
// yet). The tests hold it to the CPU decode (itself equal to the parallel forward).
#pragma once
#include <vector>

#include "lolcats/recurrent.h"
#include "nn/decode_device.h"

namespace lolcats {

struct LolcatsDeviceState {
  LolcatsDeviceState(const LolcatsModel& model, int batch, int max_len, DecodeMode mode);
  struct Layer {  // a converted layer (undefined tensors for a softmax one)
    Tensor S, z, ring_k, ring_v;        // state
    Tensor wq, wk, bq, bk, wlogit;      // the layer's LoLCATs parameters on the device (bq, bk: T2R)
  };
  HybridVariant window;        // the decode window rule (exact mode: the training variant's)
  DeviceDecodeState trunk;     // positions, the kept layers' KV caches
  std::vector<Layer> layers;   // (L)
  std::vector<int> folded;     // (batch) keys 0 .. folded-1 are in S, z (the same in every layer)
  int length(int b) const { return trunk.length[size_t(b)]; }
  void reset(int b);
  // Takes sequence b to hold P tokens whose state is whatever the buffers hold (benchmarks), as
  // LolcatsDecodeState::assume_length.
  void assume_length(int b, int P);
  size_t state_bytes() const;  // S, z and rings of every sequence
};

void lolcats_decode_step_device(const LolcatsModel& model, LolcatsDeviceState& state, const int32_t* tokens,
                                const int* n, float* logits);

// A linearized model's decoder (nn/generate.h) for `batch` sequences of up to max_len tokens (the
// bound matters only for layers kept as softmax): the CPU step (lolcats/recurrent.h) or this one,
// by where the base model's weights are.
BatchDecoder lolcats_decoder(const LolcatsModel& model, int batch, int max_len, DecodeMode mode);

}  // namespace lolcats
