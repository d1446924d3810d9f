// How a matrix product reads its operands and writes its result, named at every call:
//   matmul_forward(y, x, w, 1, N, out, in, Transpose::b)                      y  = x w^T
//   matmul_forward(c, a, b, 1, M, N, K, Transpose::none, Accumulate::yes)     c += a b
// (Its own header so that the CUDA side, cuda/gemm.h, takes the same names.)
#pragma once
#include <cstdint>

namespace lolcats {

// Which stored operands are transposed: op(A) = A^T when A is stored (K, M) (a, both), op(B) =
// B^T when B is stored (N, K) (b, both).
enum class Transpose : uint8_t { none, a, b, both };
// Accumulate::yes: C += op(A) op(B) instead of C = op(A) op(B).
enum class Accumulate : bool { no, yes };

constexpr Transpose transpose_of(bool a, bool b) {
  return a ? (b ? Transpose::both : Transpose::a) : (b ? Transpose::b : Transpose::none);
}
constexpr bool transposes_a(Transpose t) { return t == Transpose::a || t == Transpose::both; }
constexpr bool transposes_b(Transpose t) { return t == Transpose::b || t == Transpose::both; }
constexpr Accumulate accumulate_if(bool on) { return on ? Accumulate::yes : Accumulate::no; }

}  // namespace lolcats
