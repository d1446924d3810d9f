// GPU tests (`make test-gpu`). Each one skips with a clear message when this build has no CUDA or
// the machine has no GPU, so the CPU-only suite stays green everywhere.
#include "tests/helpers.h"

using namespace lolcats;

TEST_CASE("gpu: device memory round trip", "[gpu]") {
  if (!cuda_available()) SKIP_TEST("no CUDA GPU visible (or built without CUDA)");
  Tensor t = Tensor::zeros({1000}, DType::f32, Device::cuda);
  CHECK(t.device() == Device::cuda);
  CHECK(t.nbytes() == 4000);
}
