// What a host-side declaration of a CUDA launcher needs (cuda/*.h), without the CUDA headers: the
// bf16 storage type and the stream handle. Launchers live in namespace lolcats::cuda and carry the
// name and argument order of their CPU twin (outputs, saved statistics, inputs, weights, sizes),
// with the stream last.
#pragma once
struct __nv_bfloat16;
struct CUstream_st;

namespace lolcats::cuda {
using bf16 = ::__nv_bfloat16;  // bfloat16 storage (cuda_bf16.h); arithmetic is always f32
using Stream = CUstream_st*;   // cudaStream_t; 0 (nullptr) is the default stream
}  // namespace lolcats::cuda
