// Threads for the CPU kernels. One knob sets both OpenMP (our loops and our packed GEMM) and Eigen
// (the products left to it), so `--threads N` means the same thing everywhere, and benchmarks
// against PyTorch can match it.
#pragma once

namespace lolcats {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();

}  // namespace lolcats
