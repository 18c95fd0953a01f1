// Device dispatch, the one place that knows whether CUDA kernels were compiled in.
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "cpu/ops_cpu.h"
#include "seg_xai/check.h"
#ifdef SEG_XAI_WITH_CUDA
#include "cuda/ops_cuda.h"
#endif

namespace seg_xai {

[[noreturn]] inline void throw_cuda_not_built(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": got CUDA tensors, but seg_xai_fast was built without CUDA kernels; "
                           "rebuild with SEG_XAI_CUDA=on (needs nvcc), e.g. "
                           "SEG_XAI_CUDA=on pip install .");
}

// Float tensors: float32 on CPU; float32/float16/bfloat16 on CUDA (float32 accumulation).
inline void check_float(const char* op, const char* arg, const TensorView& t) {
  if (t.device == DeviceType::CUDA)
    check_dtype(op, arg, t, {DType::Float32, DType::Float16, DType::BFloat16});
  else
    check_dtype(op, arg, t, {DType::Float32});
}

// Rank, contiguity and non-emptiness of each (name, view).
inline void check_layout(const char* op, std::initializer_list<std::pair<Named, int>> args) {
  for (const auto& [named, ndim] : args) {
    check_ndim(op, named.first, *named.second, ndim);
    check_contiguous(op, named.first, *named.second);
    check_not_empty(op, named.first, *named.second);
  }
}

}  // namespace seg_xai

// SEG_XAI_CUDA_CALL(op, cuda::<op>_cuda(...)): the call in a CUDA build, else the "built without
// CUDA" error (the call's tokens are dropped, so CUDA-less builds need no CUDA declarations).
#ifdef SEG_XAI_WITH_CUDA
#define SEG_XAI_CUDA_CALL(op, call)                                       \
  do {                                                                    \
    try {                                                                 \
      call;                                                               \
    } catch (const std::runtime_error& e) { /* CUDA errors: name the op */ \
      throw std::runtime_error(std::string(op) + ": " + e.what());        \
    }                                                                     \
  } while (0)
#else
#define SEG_XAI_CUDA_CALL(op, call) ::seg_xai::throw_cuda_not_built(op)
#endif
