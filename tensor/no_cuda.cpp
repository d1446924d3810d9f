// Built instead of cuda/memory.cu when the project is compiled without CUDA (no nvcc, or CUDA=0).
#include "tensor/device.h"
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
void device_synchronize() {}
DeviceMemoryStats device_memory_stats() { return {}; }
void device_memory_reset_peak() {}
DeviceMemoryInfo device_memory_info() { ENSURE(false, "%s", kNoCuda); }

}  // namespace lolcats
