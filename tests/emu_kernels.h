// Host wrappers of tests/emu_kernels.cu (kept apart so that the Catch2 tests compile with g++ only).
#pragma once
#include <cstddef>
#include <vector>

namespace emu_test {

std::vector<float> run_block_sum(const std::vector<float>& x, int block, bool with_barriers);
// kind: 0 __shfl_sync, 1 __shfl_up_sync, 2 __shfl_down_sync, 3 __shfl_xor_sync; one warp,
// lane l holds 100 * l + 7.
std::vector<int> run_shuffle(int kind, int arg, int width);
void run_warp_sums(std::vector<float>& f, std::vector<double>& d);
// Even lanes vote with mask 0x55555555; blocks of 64 threads.
void run_votes(const std::vector<int>& pred, std::vector<unsigned>& ballot, std::vector<int>& any,
               std::vector<int>& all);
void run_block_3d(std::vector<int>& linear, std::vector<unsigned>& ballot);
void run_atomics(int blocks, int threads, int& count, float& fsum);
std::vector<float> run_reverse_blocks(const std::vector<float>& x, int block);
float run_big_shared(int floats, bool raise_limit);
// The device's per-block opt-in shared memory limit, as cudaDeviceGetAttribute
// (cudaDevAttrMaxSharedMemoryPerBlockOptin) or cudaGetDeviceProperties (sharedMemPerBlockOptin) says.
size_t shared_optin_reported(bool from_properties);

enum class Faulty { divergent_barrier, exit_before_barrier, shuffle_missing_lane, shuffle_mask_without_self, crash };
void run_faulty(Faulty which);  // emulator builds only

}  // namespace emu_test
