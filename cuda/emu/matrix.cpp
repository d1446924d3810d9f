// The warp-level matrix instructions of cuda/emu/matrix.h, computed as the PTX ISA defines them
// ("Warp-level matrix fragment" sections of the ISA for mma.m16n8k16 / mma.m16n8k8 and ldmatrix).
// In the fragment layouts below, for lane l: groupID g = l >> 2 and threadID_in_group t = l % 4;
// a .b32 register that holds two 16-bit elements holds the lower-numbered one in its low half.
#include "cuda/emu/matrix.h"

#include <cstring>
#include <string>

#include "cuda/emu/emu.h"
#include "tensor/check.h"

namespace lolcats::emu {

namespace {

struct MmaLane {
  float* d;
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
};

float bits_to_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
float bf16_to_float(uint32_t h) { return bits_to_float(h << 16); }
// An operand of a .tf32 mma is a .b32 of which the tensor core reads only the sign, exponent and
// top 10 mantissa bits. The ISA does not say what becomes of the low 13 bits of a value that was
// not rounded to tf32 (cvt.rna.tf32.f32 is the instruction that rounds); the emulator drops them,
// i.e. rounds toward zero. Kernels must round their operands themselves and not rely on this.
float tf32_to_float(uint32_t u) { return bits_to_float(u & 0xffffe000u); }

// D = A * B + C for an M x N x K product from the lanes' fragments. Every product of two bf16 or
// two tf32 values is exact in f32 (8 x 8 or 11 x 11 significant bits); the emulator adds them to C
// in double, k ascending, and rounds once to f32. The ISA does not fix the order or the precision
// of the tensor core's accumulation, so tests allow any order of f32 additions (see
// tests/test_cuda_mma.cpp).
template <int K>
std::string mma_product(void* const lanes[32], const float (&A)[16][K], const float (&B)[K][8],
                        const float (&C)[16][8]) {
  float D[16][8];
  for (int i = 0; i < 16; i++)
    for (int j = 0; j < 8; j++) {
      double sum = C[i][j];
      for (int k = 0; k < K; k++) sum += double(A[i][k]) * double(B[k][j]);
      D[i][j] = float(sum);
    }
  // C/D fragment (both shapes): c_i at row g + 8 * (i >= 2), column 2t + (i & 1).
  for (int l = 0; l < 32; l++) {
    auto* lane = static_cast<MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; i++) lane->d[i] = D[g + 8 * (i >> 1)][2 * t + (i & 1)];
  }
  return "";
}

void read_c(void* const lanes[32], float (&C)[16][8]) {
  for (int l = 0; l < 32; l++) {
    auto* lane = static_cast<const MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; i++) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = lane->c[i];
  }
}

std::string mma_bf16(void* const lanes[32]) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; l++) {
    auto* lane = static_cast<const MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    // A (16 x 16, row-major fragment): a_i, i = 0..7, in register i / 2; row g for i in {0,1,4,5},
    // g + 8 for i in {2,3,6,7}; column 2t + (i & 1), plus 8 for i >= 4.
    for (int i = 0; i < 8; i++) {
      uint32_t h = (lane->a[i >> 1] >> (16 * (i & 1))) & 0xffffu;
      A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = bf16_to_float(h);
    }
    // B (16 x 8, column-major fragment): b_i, i = 0..3, in register i / 2; row 2t + (i & 1),
    // plus 8 for i >= 2; column g.
    for (int i = 0; i < 4; i++) {
      uint32_t h = (lane->b[i >> 1] >> (16 * (i & 1))) & 0xffffu;
      B[2 * t + (i & 1) + 8 * (i >> 1)][g] = bf16_to_float(h);
    }
  }
  read_c(lanes, C);
  return mma_product<16>(lanes, A, B, C);
}

std::string mma_tf32(void* const lanes[32]) {
  float A[16][8], B[8][8], C[16][8];
  for (int l = 0; l < 32; l++) {
    auto* lane = static_cast<const MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    // A (16 x 8): a_i, i = 0..3, one per register; row g for a0 and a2, g + 8 for a1 and a3;
    // column t for a0 and a1, t + 4 for a2 and a3.
    for (int i = 0; i < 4; i++) A[g + 8 * (i & 1)][t + 4 * (i >> 1)] = tf32_to_float(lane->a[i]);
    // B (8 x 8): b0 at row t, b1 at row t + 4; column g.
    for (int i = 0; i < 2; i++) B[t + 4 * i][g] = tf32_to_float(lane->b[i]);
  }
  read_c(lanes, C);
  return mma_product<8>(lanes, A, B, C);
}

struct LdmatrixLane {
  uint32_t* r;
  const void* row;
};

// ldmatrix .m8n8 .b16: matrix m (0 .. num-1) has its 8 rows of 8 16-bit elements (16 bytes each)
// at the addresses that lanes 8m .. 8m+7 give, in that order; the other lanes' addresses are not
// read. Lane l receives, in register m, the elements (row g, columns 2t and 2t + 1) of matrix m,
// or with .trans those of its transpose: (rows 2t and 2t + 1, column g).
template <int num, bool trans>
std::string ldmatrix_collective(void* const lanes[32]) {
  uint16_t M[num][8][8];
  for (int m = 0; m < num; m++)
    for (int r = 0; r < 8; r++) {
      const void* p = static_cast<const LdmatrixLane*>(lanes[8 * m + r])->row;
      if (uintptr_t(p) % 16 != 0)
        return strfmt("lane %d gives row %d of matrix %d at %p, which is not 16-byte aligned",
                      8 * m + r, r, m, p);
      std::memcpy(M[m][r], p, 16);
    }
  for (int l = 0; l < 32; l++) {
    auto* lane = static_cast<LdmatrixLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    for (int m = 0; m < num; m++) {
      uint32_t lo = trans ? M[m][2 * t][g] : M[m][g][2 * t];
      uint32_t hi = trans ? M[m][2 * t + 1][g] : M[m][g][2 * t + 1];
      lane->r[m] = lo | hi << 16;
    }
  }
  return "";
}

}  // namespace

void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                       const char* file, int line) {
  MmaLane lane{d, a, b, c};
  warp_matrix("mma.sync.m16n8k16.bf16", mma_bf16, &lane, file, line);
}

void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                      const char* file, int line) {
  MmaLane lane{d, a, b, c};
  warp_matrix("mma.sync.m16n8k8.tf32", mma_tf32, &lane, file, line);
}

void ldmatrix(uint32_t* r, int num, bool trans, const void* row, const char* file, int line) {
  LdmatrixLane lane{r, row};
  // One function per form: lanes at different forms meet at different collectives (an error).
  WarpMatrixFn fn = nullptr;
  const char* op = nullptr;
  switch (num * 2 + int(trans)) {
    case 2: fn = ldmatrix_collective<1, false>, op = "ldmatrix.m8n8.x1.b16"; break;
    case 3: fn = ldmatrix_collective<1, true>, op = "ldmatrix.m8n8.x1.trans.b16"; break;
    case 4: fn = ldmatrix_collective<2, false>, op = "ldmatrix.m8n8.x2.b16"; break;
    case 5: fn = ldmatrix_collective<2, true>, op = "ldmatrix.m8n8.x2.trans.b16"; break;
    case 8: fn = ldmatrix_collective<4, false>, op = "ldmatrix.m8n8.x4.b16"; break;
    case 9: fn = ldmatrix_collective<4, true>, op = "ldmatrix.m8n8.x4.trans.b16"; break;
    default: ENSURE(false, "ldmatrix of %d matrices (1, 2 or 4)", num);
  }
  warp_matrix(op, fn, &lane, file, line);
}

}  // namespace lolcats::emu
