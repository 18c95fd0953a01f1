// Helpers shared by the CPU kernels.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "loops.h"
#include "seg_xai/bilinear.h"
#include "seg_xai/tensor_view.h"

namespace seg_xai::cpu {

// Sums over channels are accumulated in chunks of this many channels, then the chunks are added:
// the float32 rounding error grows with chunk + C/chunk terms instead of C (2048 at ResNet layer4),
// which keeps the maps within ~1e-5 of torch's blocked matmul/sum.
constexpr int64_t kChannelChunk = 64;

// float → IEEE half bits, round to nearest even (as torch's .half()); no F16C needed.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / inf
  if (x >= 0x477ff000u) return sign | 0x7c00u;                                   // overflow
  if (x < 0x38800000u) {                                                         // subnormal
    if (x < 0x33000000u) return sign;
    const uint32_t mant = (x & 0x007fffffu) | 0x00800000u;
    const int shift = 126 - int(x >> 23);  // h = mant·2^(e−126)
    uint32_t h = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;
    return sign | h;
  }
  uint32_t h = ((x - 0x38000000u) >> 13);  // rebias exponent 127 → 15
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: fine
  return sign | h;
}

// Write n float32 values to `out` (float32 or float16) starting at element offset.
inline void store(const float* src, const TensorView& out, int64_t offset, int64_t n) {
  if (out.dtype == DType::Float32) {
    float* dst = out.ptr<float>() + offset;
    if (dst != src) std::memcpy(dst, src, n * sizeof(float));
  } else {
    uint16_t* dst = out.ptr<uint16_t>() + offset;
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
  }
}

// ReLU + min-max normalisation of one map in place. x: [n]
inline void normalize_inplace(float* x, int64_t n, float eps) {
  const MinMax r = relu_min_max(x, n);
  minmax_apply(x, x, n, r.lo, (r.hi - r.lo) + eps);
}

// The taps of one resize axis as flat arrays (vectorisable gathers, shared by all maps).
struct AxisTable {
  std::vector<int32_t> i0, i1;
  std::vector<float> l0, l1;
  AxisTable(int64_t n, int64_t n_out, bool align_corners)
      : i0(n_out), i1(n_out), l0(n_out), l1(n_out) {
    const float scale = axis_scale(n, n_out, align_corners);
    for (int64_t i = 0; i < n_out; ++i) {
      const AxisTap t = axis_tap(i, n, scale, align_corners);
      i0[i] = int32_t(t.i0), i1[i] = int32_t(t.i1), l0[i] = t.l0, l1[i] = t.l1;
    }
  }
};

// ReLU + min-max of M maps of n values each, in place, one map per thread. x: [M,n]
inline void normalize_all(float* x, int64_t M, int64_t n, float eps, int num_threads) {
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) normalize_inplace(x + m * n, n, eps);
}

}  // namespace seg_xai::cpu
