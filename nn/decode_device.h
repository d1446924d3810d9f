// The trunk of a decode step (nn/decoder.h) through the op layer (tensor/device.h), so that it runs
// where the model's weights are: on the cuda device (bf16 or f32 storage, f32 accumulation) and,
// for its tests, on the CPU. Same rows, same math as the CPU trunk (nn/decode.h), which the tests
// hold it to. Scratch tensors come from the device's caching allocator each step (no cudaMalloc
// once warm); the token ids and RoPE rows of a step are uploaded, the logits asked for downloaded.
// The LoRA must be merged into the weights first (merge_lora).
#pragma once
#include <memory>

#include "nn/decoder.h"

namespace lolcats {

std::unique_ptr<DecodeTrunk> make_device_decode_trunk(const Llama& model);

}  // namespace lolcats
