// The kernels of tests/test_cuda_mma.cpp: each primitive of cuda/mma.cuh in a single warp, with its
// operands placed by the PTX ISA's fragment layouts (written here element by element, in the ISA's
// own words, apart from the emulator's arithmetic form in cuda/emu/matrix.cpp), and a 32 x 32 x 32
// GEMM built from cp.async + ldmatrix + mma. The same file compiles with nvcc (sm_80 and newer);
// the faulty kernels, and the reads of copies never waited for, are emulator-only.
#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "tests/mma_kernels.h"

namespace {

// mma m16n8k16 .bf16, one warp. A: 16 x 16, B: 16 x 8 (k, n), C and D: 16 x 8, all row-major.
__global__ void mma_bf16_kernel(float* D, const uint16_t* A, const uint16_t* B, const float* C) {
  int lane = threadIdx.x, groupID = lane >> 2, threadID_in_group = lane % 4;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4], d[4];
  for (int i = 0; i < 8; i++) {  // a_i: register i / 2, half i % 2
    int row = (i < 2 || (4 <= i && i < 6)) ? groupID : groupID + 8;
    int col = i < 4 ? threadID_in_group * 2 + (i & 1) : threadID_in_group * 2 + (i & 1) + 8;
    a[i / 2] |= uint32_t(A[row * 16 + col]) << (16 * (i % 2));
  }
  for (int i = 0; i < 4; i++) {  // b_i
    int row = i < 2 ? threadID_in_group * 2 + (i & 1) : threadID_in_group * 2 + (i & 1) + 8;
    int col = groupID;
    b[i / 2] |= uint32_t(B[row * 8 + col]) << (16 * (i % 2));
  }
  for (int i = 0; i < 4; i++) {  // c_i and d_i
    int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 1);
    c[i] = C[row * 8 + col];
  }
  mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; i++) {
    int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 1);
    D[row * 8 + col] = d[i];
  }
}

// mma m16n8k8 .tf32, one warp. A: 16 x 8, B: 8 x 8 (k, n), C and D: 16 x 8, all row-major.
__global__ void mma_tf32_kernel(float* D, const float* A, const float* B, const float* C) {
  int lane = threadIdx.x, groupID = lane >> 2, threadID_in_group = lane % 4;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; i++) {
    int row = (i == 0 || i == 2) ? groupID : groupID + 8;
    int col = i < 2 ? threadID_in_group : threadID_in_group + 4;
    a[i] = __float_as_uint(A[row * 8 + col]);
  }
  for (int i = 0; i < 2; i++) {
    int row = i == 0 ? threadID_in_group : threadID_in_group + 4, col = groupID;
    b[i] = __float_as_uint(B[row * 8 + col]);
  }
  for (int i = 0; i < 4; i++) {
    int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 1);
    c[i] = C[row * 8 + col];
  }
  mma_m16n8k8_tf32(d, a, b, c);
  for (int i = 0; i < 4; i++) {
    int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 1);
    D[row * 8 + col] = d[i];
  }
}

// ldmatrix: shared memory = 64 rows of 8 b16 values (16 bytes each, so every row is aligned).
__global__ void ldmatrix_kernel(uint32_t* out, const uint16_t* values, const int* row_of_lane,
                                int num, int trans) {
  EXTERN_SHARED(uint16_t, smem);
  int lane = threadIdx.x;
  for (int i = lane; i < 64 * 8; i += 32) smem[i] = values[i];
  __syncthreads();
  const uint16_t* row = smem + 8 * row_of_lane[lane];
  uint32_t r[4] = {0, 0, 0, 0};
  switch (num * 2 + trans) {
    case 2: ldmatrix_x1(r, row); break;
    case 3: ldmatrix_x1_trans(r, row); break;
    case 4: ldmatrix_x2(r, row); break;
    case 5: ldmatrix_x2_trans(r, row); break;
    case 8: ldmatrix_x4(r, row); break;
    case 9: ldmatrix_x4_trans(r, row); break;
  }
  for (int m = 0; m < num; m++) out[lane * num + m] = r[m];
}

// cp.async in three groups (see run_cp_async), then wait_group `wait` (none when wait < 0).
__global__ void cp_async_kernel(uint32_t* out, const float* src, int wait) {
  EXTERN_SHARED(float, smem);
  int t = threadIdx.x;
  float* dst = smem + 16 * t;
  const float* s = src + 16 * t;
  cp_async_16(dst, s);
  cp_async_8(dst + 4, s + 4);
  cp_async_8(dst + 6, s + 6);
  cp_async_commit();
  for (int i = 8; i < 12; i++) cp_async_4(dst + i, s + i);
  cp_async_commit();
  cp_async_16(dst + 12, s + 12);
  cp_async_commit();
  switch (wait) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    default: break;  // no wait: what the destination reads is undefined on a GPU
  }
  for (int i = 0; i < 16; i++) out[16 * t + i] = __float_as_uint(dst[i]);
  if (wait != 0) cp_async_wait<0>();  // a kernel must not exit with copies in flight
}

// C = A * B, 32 x 32 x 32, bf16 in, f32 out; one block of four warps, warp w computes the 16 x 16
// tile at rows 16 * (w / 2), columns 16 * (w % 2) as two m16n8 tiles. The k dimension is staged in
// two slabs of 16, each a cp.async group, so that the first slab's products start after
// wait_group 1 while the second's copies may still be in flight.
__global__ void gemm_32_kernel(float* C, const bf16* A, const bf16* B) {
  constexpr int S = 32;
  EXTERN_SHARED(bf16, smem);
  bf16* As = smem;          // [32][32]: rows of 64 bytes, so every 8-element row is 16-byte aligned
  bf16* Bs = smem + S * S;  // [32][32], (k, n)
  int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  for (int slab = 0; slab < 2; slab++) {
    int k0 = 16 * slab;
    if (tid < 64) {  // A: 32 rows x 2 chunks of 8 elements
      int r = tid / 2, c = k0 + 8 * (tid % 2);
      cp_async_16(As + r * S + c, A + r * S + c);
    } else {  // B: 16 rows x 4 chunks
      int j = tid - 64, r = k0 + j / 4, c = 8 * (j % 4);
      cp_async_16(Bs + r * S + c, B + r * S + c);
    }
    cp_async_commit();
  }
  int m0 = 16 * (warp / 2), n0 = 16 * (warp % 2);
  float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  for (int slab = 0; slab < 2; slab++) {
    if (slab == 0) cp_async_wait<1>();
    else cp_async_wait<0>();
    __syncthreads();  // every thread's copies of this slab have landed
    int k0 = 16 * slab, m = lane >> 3, i = lane & 7;  // lane gives row i of matrix m
    // A's four 8 x 8 matrices in a0..a3 order: (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
    uint32_t a[4], b[4];
    ldmatrix_x4(a, As + (m0 + i + 8 * (m & 1)) * S + k0 + 8 * (m >> 1));
    // B is stored (k, n): transposed, matrix (k 0-7, n 0-7) gives b0 of the first n tile, (k 8-15,
    // n 0-7) its b1, and the same for n 8-15 in b[2], b[3].
    ldmatrix_x4_trans(b, Bs + (k0 + i + 8 * (m & 1)) * S + n0 + 8 * (m >> 1));
    mma_m16n8k16_bf16(acc[0], a, b, acc[0]);
    mma_m16n8k16_bf16(acc[1], a, b + 2, acc[1]);
  }
  int g = lane >> 2, t = lane % 4;
  for (int n = 0; n < 2; n++)
    for (int i = 0; i < 4; i++)
      C[(m0 + g + 8 * (i >> 1)) * S + n0 + 8 * n + 2 * t + (i & 1)] = acc[n][i];
}

#ifdef LOLCATS_CUDA_EMU
__global__ void mma_half_warp(float* out) {  // lanes 16-31 go to __syncwarp instead
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16) mma_m16n8k16_bf16(d, a, b, c);
  else __syncwarp();
  out[threadIdx.x] = d[0];
}
__global__ void mma_short_block(float* out) {  // launched with 16 threads
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
  mma_m16n8k16_bf16(d, a, b, c);
  out[threadIdx.x] = d[0];
}
__global__ void ldmatrix_mixed_forms(float* out) {  // odd lanes ask for the transpose
  __shared__ __align__(16) uint16_t tile[64];
  uint32_t r[1];
  if (threadIdx.x % 2) ldmatrix_x1_trans(r, tile + 8 * (threadIdx.x % 8));
  else ldmatrix_x1(r, tile + 8 * (threadIdx.x % 8));
  out[threadIdx.x] = float(r[0]);
}
__global__ void ldmatrix_unaligned(float* out) {  // lane 3's row is 2 bytes off
  __shared__ __align__(16) uint16_t tile[80];
  uint32_t r[1];
  ldmatrix_x1(r, tile + 8 * (threadIdx.x % 8) + (threadIdx.x == 3));
  out[threadIdx.x] = float(r[0]);
}
#endif

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  cudaCheck(cudaMalloc(&p, v.size() * sizeof(T)));
  cudaCheck(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
template <typename T>
std::vector<T> from_device(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaCheck(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}
struct DeviceBuffers {  // frees what a wrapper allocated, also when a launch throws
  std::vector<void*> p;
  template <typename T>
  T* add(T* q) {
    p.push_back(q);
    return q;
  }
  ~DeviceBuffers() {
    for (void* q : p) cudaFree(q);
  }
};

}  // namespace

namespace mma_test {

std::vector<float> run_mma_bf16(const std::vector<uint16_t>& A, const std::vector<uint16_t>& B,
                                const std::vector<float>& C) {
  DeviceBuffers m;
  float* d = m.add(to_device(std::vector<float>(16 * 8)));
  uint16_t* a = m.add(to_device(A));
  uint16_t* b = m.add(to_device(B));
  float* c = m.add(to_device(C));
  launch_kernel(mma_bf16_kernel, 1, 32, 0, 0, d, a, b, c);
  return from_device(d, 16 * 8);
}

std::vector<float> run_mma_tf32(const std::vector<float>& A, const std::vector<float>& B,
                                const std::vector<float>& C) {
  DeviceBuffers m;
  float* d = m.add(to_device(std::vector<float>(16 * 8)));
  float* a = m.add(to_device(A));
  float* b = m.add(to_device(B));
  float* c = m.add(to_device(C));
  launch_kernel(mma_tf32_kernel, 1, 32, 0, 0, d, a, b, c);
  return from_device(d, 16 * 8);
}

std::vector<uint32_t> run_ldmatrix(int num, bool trans, const std::vector<uint16_t>& smem,
                                   const std::vector<int>& row_of_lane) {
  DeviceBuffers m;
  uint32_t* out = m.add(to_device(std::vector<uint32_t>(size_t(32 * num))));
  uint16_t* v = m.add(to_device(smem));
  int* rows = m.add(to_device(row_of_lane));
  launch_kernel(ldmatrix_kernel, 1, 32, 64 * 8 * sizeof(uint16_t), 0, out, v, rows, num, int(trans));
  return from_device(out, size_t(32 * num));
}

std::vector<uint32_t> run_cp_async(const std::vector<float>& src, int wait) {
  DeviceBuffers m;
  uint32_t* out = m.add(to_device(std::vector<uint32_t>(32 * 16)));
  float* s = m.add(to_device(src));
  launch_kernel(cp_async_kernel, 1, 32, 32 * 16 * sizeof(float), 0, out, s, wait);
  return from_device(out, 32 * 16);
}

std::vector<float> run_gemm_32(const std::vector<uint16_t>& A, const std::vector<uint16_t>& B) {
  DeviceBuffers m;
  float* c = m.add(to_device(std::vector<float>(32 * 32)));
  bf16* a = m.add(reinterpret_cast<bf16*>(to_device(A)));
  bf16* b = m.add(reinterpret_cast<bf16*>(to_device(B)));
  launch_kernel(gemm_32_kernel, 1, 128, 2 * 32 * 32 * sizeof(bf16), 0, c, a, b);
  return from_device(c, 32 * 32);
}

void run_faulty(Faulty which) {
#ifdef LOLCATS_CUDA_EMU
  DeviceBuffers m;
  float* d = m.add(to_device(std::vector<float>(32)));
  switch (which) {
    case Faulty::mma_half_warp: launch_kernel(mma_half_warp, 1, 32, 0, 0, d); break;
    case Faulty::mma_short_block: launch_kernel(mma_short_block, 1, 16, 0, 0, d); break;
    case Faulty::ldmatrix_mixed_forms: launch_kernel(ldmatrix_mixed_forms, 1, 32, 0, 0, d); break;
    case Faulty::ldmatrix_unaligned: launch_kernel(ldmatrix_unaligned, 1, 32, 0, 0, d); break;
  }
#else
  (void)which;
#endif
}

}  // namespace mma_test
