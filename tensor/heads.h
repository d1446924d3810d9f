// Eigen views of one attention head inside a (B, T, heads, X) tensor, without copying: rows are
// tokens, the row stride is heads * X. Shared by the attention kernels (tensor/attention.cpp,
// lolcats/hybrid_attention.cpp).
#pragma once
#include <Eigen/Core>
#include <cstdint>

namespace lolcats {

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Strided = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using StridedMut = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;

// Rows t0 .. t0+rows-1 of head h of batch b in x (B, T, heads, X), as a (rows, X) matrix.
template <typename T>
Strided<T> head(const T* x, int b, int t0, int rows, int h, int T_, int heads, int X) {
  return Strided<T>(x + ((int64_t(b) * T_ + t0) * heads + h) * X, rows, X,
                    Eigen::OuterStride<>(int64_t(heads) * X));
}
template <typename T>
StridedMut<T> head_mut(T* x, int b, int t0, int rows, int h, int T_, int heads, int X) {
  return StridedMut<T>(x + ((int64_t(b) * T_ + t0) * heads + h) * X, rows, X,
                       Eigen::OuterStride<>(int64_t(heads) * X));
}

}  // namespace lolcats
