// Device time stamps for the op profile (tensor/op_profile.h): CUDA events on the legacy stream.
// Under the emulator an event is the host's clock at the record (launches are synchronous there).
#include "cuda/common.cuh"
#include "tensor/op_profile.h"

namespace lolcats {

void* device_event_record() {
  cudaEvent_t e = nullptr;
  cudaCheck(cudaEventCreate(&e));
  cudaCheck(cudaEventRecord(e, nullptr));
  return e;
}

float device_event_ms(void* start, void* end) {
  float ms = 0;
  cudaCheck(cudaEventSynchronize(static_cast<cudaEvent_t>(end)));
  cudaCheck(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void device_event_free(void* event) { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }

}  // namespace lolcats
