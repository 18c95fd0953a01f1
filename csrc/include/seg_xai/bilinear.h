// PyTorch's bilinear source-index rule for F.interpolate(size=...), shared by CPU and CUDA so both
// pick the same neighbours and weights (ATen/native/UpSample.h: area_pixel_compute_scale,
// area_pixel_compute_source_index, guard_index_and_lambda).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SEG_XAI_HD __host__ __device__ __forceinline__
#else
#define SEG_XAI_HD inline
#endif

namespace seg_xai {

// Output index i along one axis reads input i0 with weight l0 and i1 with weight l1.
struct AxisTap {
  int64_t i0, i1;
  float l0, l1;
};

// Input length n, output length n_out.
SEG_XAI_HD float axis_scale(int64_t n, int64_t n_out, bool align_corners) {
  if (align_corners) return n_out > 1 ? float(n - 1) / float(n_out - 1) : 0.f;
  return float(n) / float(n_out);
}

SEG_XAI_HD AxisTap axis_tap(int64_t i, int64_t n, float scale, bool align_corners) {
  float x = align_corners ? scale * float(i) : scale * (float(i) + 0.5f) - 0.5f;
  if (x < 0.f) x = 0.f;  // only reachable without align_corners
  int64_t i0 = static_cast<int64_t>(floorf(x));
  if (i0 > n - 1) i0 = n - 1;
  const int64_t i1 = i0 < n - 1 ? i0 + 1 : i0;
  const float l1 = fminf(fmaxf(x - float(i0), 0.f), 1.f);
  return {i0, i1, 1.f - l1, l1};
}

}  // namespace seg_xai
