// Warp-level matrix primitives for tensor-core kernels, one small wrapper per PTX instruction:
// under nvcc the instruction itself (inline PTX; every architecture the build targets is sm_80 or
// newer), under the SIMT emulator an exact emulation (cuda/emu/matrix.cpp, scheduler.cpp).
//
//   mma_m16n8k16_bf16(d, a, b, c)  D (16 x 8, f32) = A (16 x 16, bf16) * B (16 x 8, bf16) + C
//   mma_m16n8k8_tf32(d, a, b, c)   D (16 x 8, f32) = A (16 x 8, tf32) * B (8 x 8, tf32) + C
//   ldmatrix_x1/_x2/_x4(r, row)    one, two or four 8 x 8 b16 matrices from shared memory; lane
//   ldmatrix_x*_trans(r, row)      8m + i gives the address of row i of matrix m (16-byte aligned)
//   cp_async_4/_8/_16(dst, src)    an asynchronous copy global -> shared of 4, 8 or 16 bytes
//   cp_async_commit()              closes this thread's group of cp.async copies
//   cp_async_wait<N>()             waits until at most N of this thread's groups are pending
//
// The fragment layouts are the PTX ISA's (for lane l: g = l >> 2, t = l % 4; two 16-bit elements
// in a .b32 register: the lower-numbered in the low half):
//   m16n8k16 bf16  A: a[r] holds (row g + 8 * (r & 1), columns 2t + 8 * (r >> 1) + {0, 1})
//                  B: b[r] holds (rows 2t + 8r + {0, 1}, column g)
//   m16n8k8 tf32   A: a[r] holds (row g + 8 * (r & 1), column t + 4 * (r >> 1))
//                  B: b[r] holds (row t + 4r, column g)
//   C and D (both) c[i] is (row g + 8 * (i >> 1), column 2t + (i & 1))
//   ldmatrix       r[m] holds (row g, columns 2t + {0, 1}) of matrix m; with _trans the transpose:
//                  (rows 2t + {0, 1}, column g)
// mma and ldmatrix need the whole warp (all 32 lanes, converged); ldmatrix reads the row
// addresses of lanes 0-7 (x1), 0-15 (x2) or all (x4). A cp.async's destination holds its old
// bytes until the wait that covers its group; other threads see it only after that wait and a
// barrier (__syncthreads) as usual.
#pragma once
#include <cstdint>

#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/emu.h"
#include "cuda/emu/matrix.h"
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "cuda/mma.cuh: mma.sync bf16/tf32 and cp.async need sm_80 or newer"
#endif

#ifdef LOLCATS_CUDA_EMU
// The emulator's wrappers take the caller's file and line (GCC's builtins as default arguments),
// so that a fault names the kernel's line rather than this header's.
#define LOLCATS_MMA_WHERE , const char *file = __builtin_FILE(), int line = __builtin_LINE()
#else
#define LOLCATS_MMA_WHERE
#endif

__device__ inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                         const float c[4] LOLCATS_MMA_WHERE) {
#ifdef LOLCATS_CUDA_EMU
  ::lolcats::emu::mma_m16n8k16_bf16(d, a, b, c, file, line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

// The operands are f32 bit patterns already rounded to tf32 (cvt.rna.tf32.f32): the tensor core
// reads only their top 19 bits (the emulator drops the low 13, see cuda/emu/matrix.cpp).
__device__ inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                        const float c[4] LOLCATS_MMA_WHERE) {
#ifdef LOLCATS_CUDA_EMU
  ::lolcats::emu::mma_m16n8k8_tf32(d, a, b, c, file, line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

#ifndef LOLCATS_CUDA_EMU
__device__ inline uint32_t lolcats_smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
#endif

// "memory" clobbers: ldmatrix reads shared memory that plain stores wrote, and the compiler must
// not move those stores past it (nor cp.async's shared-memory writes past later loads).
#ifdef LOLCATS_CUDA_EMU
#define LOLCATS_LDMATRIX(name, num, trans)                                      \
  __device__ inline void name(uint32_t* r, const void* row LOLCATS_MMA_WHERE) { \
    ::lolcats::emu::ldmatrix(r, num, trans, row, file, line);                   \
  }
LOLCATS_LDMATRIX(ldmatrix_x1, 1, false)
LOLCATS_LDMATRIX(ldmatrix_x2, 2, false)
LOLCATS_LDMATRIX(ldmatrix_x4, 4, false)
LOLCATS_LDMATRIX(ldmatrix_x1_trans, 1, true)
LOLCATS_LDMATRIX(ldmatrix_x2_trans, 2, true)
LOLCATS_LDMATRIX(ldmatrix_x4_trans, 4, true)
#undef LOLCATS_LDMATRIX
#endif

#ifndef LOLCATS_CUDA_EMU
__device__ inline void ldmatrix_x1(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0]) : "r"(lolcats_smem_addr(row)) : "memory");
}
__device__ inline void ldmatrix_x2(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1]) : "r"(lolcats_smem_addr(row)) : "memory");
}
__device__ inline void ldmatrix_x4(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(lolcats_smem_addr(row)) : "memory");
}
__device__ inline void ldmatrix_x1_trans(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0]) : "r"(lolcats_smem_addr(row)) : "memory");
}
__device__ inline void ldmatrix_x2_trans(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1]) : "r"(lolcats_smem_addr(row)) : "memory");
}
__device__ inline void ldmatrix_x4_trans(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(lolcats_smem_addr(row)) : "memory");
}
#endif

// cp.async: .ca (through L1) for 4 and 8 bytes, .cg (L2 only; 16 bytes is its only size) for 16.
// `dst` is in shared memory, `src` in global memory, both aligned to the size.
#ifdef LOLCATS_CUDA_EMU
__device__ inline void cp_async_4(void* dst, const void* src LOLCATS_MMA_WHERE) {
  ::lolcats::emu::cp_async(dst, src, 4, file, line);
}
__device__ inline void cp_async_8(void* dst, const void* src LOLCATS_MMA_WHERE) {
  ::lolcats::emu::cp_async(dst, src, 8, file, line);
}
__device__ inline void cp_async_16(void* dst, const void* src LOLCATS_MMA_WHERE) {
  ::lolcats::emu::cp_async(dst, src, 16, file, line);
}
__device__ inline void cp_async_commit() { ::lolcats::emu::cp_async_commit(); }
template <int N>
__device__ inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a count of groups >= 0");
  ::lolcats::emu::cp_async_wait(N);
}
#else
__device__ inline void cp_async_4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n"
               :: "r"(lolcats_smem_addr(dst)), "l"(__cvta_generic_to_global(src)) : "memory");
}
__device__ inline void cp_async_8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n"
               :: "r"(lolcats_smem_addr(dst)), "l"(__cvta_generic_to_global(src)) : "memory");
}
__device__ inline void cp_async_16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
               :: "r"(lolcats_smem_addr(dst)), "l"(__cvta_generic_to_global(src)) : "memory");
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a count of groups >= 0");
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}
#endif

#undef LOLCATS_MMA_WHERE
