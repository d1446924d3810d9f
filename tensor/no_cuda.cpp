// Built instead of cuda/memory.cu when the project is compiled without CUDA (no nvcc, or CUDA=0).
#include "tensor/device.h"
#include "tensor/op_profile.h"
#include "tensor/tensor.h"

namespace lolcats {

static const char* kNoCuda = "this build has no CUDA support (rebuild with nvcc present, or CUDA=1)";
void* device_malloc(size_t) { ENSURE(false, "%s", kNoCuda); }
void device_free(void*) {}
void device_memset_zero(void*, size_t) { ENSURE(false, "%s", kNoCuda); }
void device_upload(void*, const void*, size_t) { ENSURE(false, "%s", kNoCuda); }
void device_download(void*, const void*, size_t) { ENSURE(false, "%s", kNoCuda); }
void device_copy(void*, const void*, size_t) { ENSURE(false, "%s", kNoCuda); }
void device_convert(void*, DType, const void*, DType, int64_t) { ENSURE(false, "%s", kNoCuda); }
bool cuda_available() { return false; }
bool gpu_visible() { return false; }
std::string device_card_name() { return "no cuda device (a build without CUDA)"; }
void device_synchronize() {}
DeviceMemoryStats device_memory_stats() { return {}; }
void device_memory_reset_peak() {}
DeviceMemoryInfo device_memory_info() { ENSURE(false, "%s", kNoCuda); }
// No device op runs in this build, so no timer opens a bracket: these are never called.
void* device_event_record() { return nullptr; }
float device_event_ms(void*, void*) { return 0; }
void device_event_free(void*) {}

}  // namespace lolcats
