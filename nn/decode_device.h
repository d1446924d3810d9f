// The decode step of nn/decode.h through the op layer (tensor/device.h), so that it runs where the
// model's weights are: on the cuda device (bf16 or f32 storage, f32 accumulation; the KV cache in
// the weights' dtype) and, for its tests, on the CPU. Same rows, same math, same hook for layers
// without a cache (a linearized layer: lolcats/recurrent_device.h); the tests hold it to the CPU
// step. Scratch tensors come from the device's caching allocator each step (no cudaMalloc once
// warm); the token ids, positions and RoPE rows of a step are uploaded, the last rows' logits
// downloaded.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/llama.h"

namespace lolcats {

struct DeviceDecodeState {
  // cached[l]: layer l keeps a KV cache (default: every layer), as LlamaDecodeState.
  DeviceDecodeState(const Llama& model, int batch, int max_len, std::vector<bool> cached = {});
  int batch, max_len;
  std::vector<int> length;      // (batch) tokens already in each sequence
  std::vector<int> cache_slot;  // (L) layer l's index into k and v, -1: no cache
  Tensor k, v;                  // (cached layers * batch, max_len, Hkv, D) on the model's device
  std::vector<int32_t> row_seq, row_pos;  // the step's rows (host), as LlamaDecodeState
  std::vector<double> inv_freq;           // (D/2) RoPE speeds
  void reset(int b) { length[size_t(b)] = 0; }
  size_t cache_bytes() const { return k.defined() ? k.nbytes() + v.nbytes() : 0; }
};

// A layer's attention when it has no cache: y (R, H, D) from q (R, H, D), k, v (R, Hkv, D), all on
// the model's device; rows as state.row_seq / row_pos.
using DeviceDecodeAttention =
    std::function<void(int layer, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v)>;

// As llama_decode_step (nn/decode.h): sum n[b] token ids (host), logits of each sequence's last new
// token to logits + b * V (host, f32). The LoRA must be merged into the weights (merge_lora).
void llama_decode_step_device(const Llama& model, DeviceDecodeState& state, const int32_t* tokens, const int* n,
                              float* logits, const DeviceDecodeAttention& attention = {});

}  // namespace lolcats
