// Error handling shared by every CUDA file: each runtime or cuBLASLt call is wrapped, and a failure
// throws lolcats::Error with the file, line and the library's own message (never a silent status).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "tensor/check.h"

#define cudaCheck(call)                                                                  \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess)                                                             \
      ::lolcats::fail(__FILE__, __LINE__,                                                \
                      ::lolcats::strfmt("CUDA error %s: %s", cudaGetErrorName(err_),     \
                                        cudaGetErrorString(err_)));                      \
  } while (0)

#define cublasCheck(call)                                                                \
  do {                                                                                   \
    cublasStatus_t st_ = (call);                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::lolcats::fail(__FILE__, __LINE__,                                                \
                      ::lolcats::strfmt("cuBLAS error %d: %s", int(st_),                 \
                                        cublasLtGetStatusString(st_)));                  \
  } while (0)
