#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/loops.h"
#include "seg_xai/ops.h"
#ifdef SEG_XAI_WITH_CUDA
#include "cuda/ops_cuda.h"
#endif

#ifndef SEG_XAI_VERSION
#define SEG_XAI_VERSION "0+unknown"
#endif
#ifndef SEG_XAI_SOURCE_DIGEST
#define SEG_XAI_SOURCE_DIGEST ""
#endif
#ifndef SEG_XAI_CUDA_ARCHS
#define SEG_XAI_CUDA_ARCHS ""
#endif

namespace seg_xai {

BuildInfo build_info() {
  BuildInfo info;
  info.version = SEG_XAI_VERSION;
  info.source_digest = SEG_XAI_SOURCE_DIGEST;
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#elif defined(_MSC_VER)
  info.compiler = "msvc " + std::to_string(_MSC_VER);
#else
  info.compiler = "unknown";
#endif
#ifdef _OPENMP
  info.openmp = true;
  info.omp_max_threads = omp_get_max_threads();
#else
  info.openmp = false;
  info.omp_max_threads = 1;
#endif
  info.simd = cpu::simd_level();
#ifdef SEG_XAI_WITH_CUDA
  info.cuda_built = true;
  const int v = cuda::runtime_version_cuda();
  info.cuda_version = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  info.cuda_archs = SEG_XAI_CUDA_ARCHS;
  info.cuda_device_count = cuda::device_count_cuda();
#else
  info.cuda_built = false;
  info.cuda_device_count = 0;
#endif
  return info;
}

}  // namespace seg_xai
