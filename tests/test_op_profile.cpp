// The op profile (tensor/op_profile.h) on the emulated cuda device: each device op at the seam is
// counted once, under its kind, with the work its math states; the outermost op wins; nothing is
// counted while the profile is off.
#ifdef LOLCATS_CUDA
#include "tests/helpers.h"

#include "lolcats/feature_map.h"
#include "tensor/matmul.h"
#include "tensor/op_profile.h"
#include "tensor/tensor.h"

using namespace lolcats;

TEST_CASE("op profile: a device GEMM is counted once as a gemm, with 2 M N K FLOPs", "[cuda]") {
  const int M = 8, N = 16, K = 32;
  Tensor a = Tensor::zeros({M, K}, DType::f32, Device::cuda), b = Tensor::zeros({K, N}, DType::f32, Device::cuda);
  Tensor c = Tensor::empty({M, N}, DType::f32, Device::cuda);
  matmul_forward(c, a, b, 1, M, N, K, Transpose::none, Accumulate::no);  // off: not counted
  op_profile_begin();
  REQUIRE(op_profile_on());
  matmul_forward(c, a, b, 1, M, N, K, Transpose::none, Accumulate::no);
  matmul_forward(c, a, b, 1, M, N, K, Transpose::none, Accumulate::no);
  const OpProfile p = op_profile_end();
  REQUIRE_FALSE(op_profile_on());
  const int g = int(OpKind::gemm);
  CHECK(p.calls[g] == 2);
  CHECK(p.flops[g] == 2 * 2.0 * M * N * K);
  CHECK(p.bytes[g] == 2 * 4.0 * (M * K + K * N + M * N));
  CHECK(p.ms[g] >= 0);
  for (int k = 0; k < kOpKinds; k++)
    if (k != g) CHECK(p.calls[k] == 0);
}

TEST_CASE("op profile: a feature map's own GEMMs count as the feature map's", "[cuda]") {
  const int B = 1, T = 5, H = 2, D = 16, Fh = 8;
  Tensor x = Tensor::zeros({B, T, H, D}, DType::f32, Device::cuda), W = Tensor::zeros({H, D, Fh}, DType::f32, Device::cuda);
  Tensor phi = Tensor::empty({B, T, H, 2 * Fh}, DType::f32, Device::cuda);
  op_profile_begin();
  hedgehog_forward(phi, x, W);
  const OpProfile p = op_profile_end();
  CHECK(p.calls[int(OpKind::feature_map)] == 1);
  CHECK(p.flops[int(OpKind::feature_map)] == 2.0 * B * T * H * D * Fh);
  CHECK(p.calls[int(OpKind::gemm)] == 0);
}
#endif
