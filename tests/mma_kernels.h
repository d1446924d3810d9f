// Host wrappers of tests/mma_kernels.cu (kept apart so that the Catch2 tests compile with g++
// only): single-warp kernels around each primitive of cuda/mma.cuh, and a small tensor-core GEMM.
#pragma once
#include <cstdint>
#include <vector>

namespace mma_test {

// One mma.sync m16n8k16 bf16: A 16 x 16 and B 16 x 8 (k rows, n columns) as row-major bf16 bit
// patterns, C 16 x 8 row-major f32; returns D = A * B + C, 16 x 8 row-major. The kernel loads
// the fragments from global memory by the ISA's index maps, element by element.
std::vector<float> run_mma_bf16(const std::vector<uint16_t>& A, const std::vector<uint16_t>& B,
                                const std::vector<float>& C);
// One mma.sync m16n8k8 tf32: A 16 x 8, B 8 x 8, C 16 x 8, all row-major f32 bit patterns.
std::vector<float> run_mma_tf32(const std::vector<float>& A, const std::vector<float>& B,
                                const std::vector<float>& C);
// ldmatrix .x{num}{.trans}: shared memory holds `smem` (64 rows of 8 b16 values); lane l gives
// the address of row row_of_lane[l]. Returns each lane's registers, r[l * num + m].
std::vector<uint32_t> run_ldmatrix(int num, bool trans, const std::vector<uint16_t>& smem,
                                   const std::vector<int>& row_of_lane);
// cp.async: each of 32 threads copies its 16 floats of `src` into dynamic shared memory in three
// groups: floats 0-3 (one 16-byte copy) and 4-7 (two 8-byte copies), then 8-11 (four 4-byte
// copies), then 12-15 (one 16-byte copy); then waits with cp.async.wait_group `wait` (or not at
// all when wait < 0) and reads its own 16 floats back. Returns the bit patterns it read.
std::vector<uint32_t> run_cp_async(const std::vector<float>& src, int wait);
// C (32 x 32, f32) = A (32 x 32) * B (32 x 32), bf16 bit patterns, row-major: one block of four
// warps, the operands staged by cp.async in two groups, fragments by ldmatrix, products by mma.
std::vector<float> run_gemm_32(const std::vector<uint16_t>& A, const std::vector<uint16_t>& B);

enum class Faulty { mma_half_warp, mma_short_block, ldmatrix_mixed_forms, ldmatrix_unaligned };
void run_faulty(Faulty which);  // emulator builds only

}  // namespace mma_test
