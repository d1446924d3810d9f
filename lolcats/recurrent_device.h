// The recurrent memory of lolcats/recurrent.h on the cuda device, for a Decoder (nn/decoder.h)
// whose trunk runs through the op layer (nn/decode_device.h). For each converted layer, one fused
// kernel folds the keys leaving the window into S, z and attends (cuda/decode.h
// lolcats_decode_attention), then the ring write. State on the device: S (batch, H, F, D) and z
// (batch, H, F) in f32, the window ring (batch, 128, Hkv, D) in the weights' dtype; feature maps and
// window factors in f32. A prompt is prefilled by the same recurrence row after row (equal to the
// parallel form in exact mode, which is therefore the only mode here: reference mode prefills with
// the parallel kernel, not on the GPU yet). Layers kept as softmax keep a KV cache. The tests hold
// it to the CPU memory (itself equal to the parallel forward).
#pragma once
#include <memory>

#include "lolcats/recurrent.h"

namespace lolcats {

// cache: the pairs each query head keeps beside its window (lolcats/sparse_cache.h; default: none).
std::unique_ptr<DecodeMemory> make_lolcats_device_memory(const LolcatsModel& model, DecodeMode mode,
                                                         SparseCacheConfig cache = {});

}  // namespace lolcats
