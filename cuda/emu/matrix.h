// The SIMT emulator's warp-level matrix instructions, which cuda/mma.cuh calls under g++ (the PTX
// instruction each one stands for is named beside it). Each is a warp collective (warp_matrix in
// cuda/emu/emu.h): all 32 lanes arrive, the last computes every lane's result from every lane's
// registers by the PTX ISA's fragment layouts (cuda/emu/matrix.cpp), and each lane takes its own.
#pragma once
#include <cstdint>

namespace lolcats::emu {

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                       const char* file, int line);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 d, a, b, c
void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                      const char* file, int line);
// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16 r, [row]; num = 1, 2 or 4
void ldmatrix(uint32_t* r, int num, bool trans, const void* row, const char* file, int line);

}  // namespace lolcats::emu
