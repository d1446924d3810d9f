// Device memory tied to a stream (cuda/memory.cu), beside the tensors' device_malloc / device_free
// (tensor/tensor.h). The rule it serves is in cuda/README.md, "Streams and scratch memory".
#pragma once
#include "cuda/api.h"

namespace lolcats {

// Frees a block from device_malloc that work queued on `stream` may still use. On the legacy
// default stream (nullptr) the block may be handed out again at once: every later user's work is
// queued after that work, in order. On any other stream an event is recorded there, and the block
// is handed out again only once that event has completed.
void device_free_on_stream(void* p, cuda::Stream stream);

// The caching allocator (BlockCache) in the emulator build, for the tests of stream discipline:
// off by default there, so that each buffer is an exact host allocation whose overruns
// AddressSanitizer sees. A GPU build always caches and ignores this.
void device_cache_for_tests(bool on);

}  // namespace lolcats
