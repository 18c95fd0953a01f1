#include "loops.h"

#include <algorithm>
#include <cmath>

// One attribute on every hot loop: plain auto-vectorisable C++, cloned per instruction set.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SEG_XAI_NO_CLONES)
#define SEG_XAI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define SEG_XAI_FMV 1
#else
#define SEG_XAI_CLONES
#define SEG_XAI_FMV 0
#endif

namespace seg_xai::cpu {

// Reductions keep kLanes partial sums/extrema so the compiler can vectorise them without
// -ffast-math (the result is a fixed, ISA-independent summation order).
constexpr int kLanes = 16;

SEG_XAI_CLONES MinMax relu_min_max(const float* x, int64_t n) {
  float lo[kLanes], hi[kLanes];
  for (int l = 0; l < kLanes; ++l) lo[l] = 3.4028235e38f, hi[l] = 0.f;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l] > 0.f ? x[i + l] : 0.f;
      lo[l] = v < lo[l] ? v : lo[l];
      hi[l] = v > hi[l] ? v : hi[l];
    }
  for (; i < n; ++i) {
    const float v = x[i] > 0.f ? x[i] : 0.f;
    lo[0] = std::min(lo[0], v), hi[0] = std::max(hi[0], v);
  }
  MinMax r{lo[0], hi[0]};
  for (int l = 1; l < kLanes; ++l) r.lo = std::min(r.lo, lo[l]), r.hi = std::max(r.hi, hi[l]);
  return r;
}

SEG_XAI_CLONES void minmax_apply(const float* x, float* y, int64_t n, float lo, float denom) {
  for (int64_t i = 0; i < n; ++i) y[i] = ((x[i] > 0.f ? x[i] : 0.f) - lo) / denom;
}

// Σ f(i) with kLanes partial sums, then a pairwise fold of the lanes.
template <typename F>
inline float lane_sum(int64_t n, F f) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(i + l);
  for (; i < n; ++i) acc[i % kLanes] += f(i);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

SEG_XAI_CLONES float sum(const float* x, int64_t n) {
  return lane_sum(n, [x](int64_t i) { return x[i]; });
}

SEG_XAI_CLONES float dot(const float* x, const float* y, int64_t n) {
  return lane_sum(n, [x, y](int64_t i) { return x[i] * y[i]; });
}

SEG_XAI_CLONES float gradcampp_weight(const float* g, int64_t n, float s, float eps) {
  return lane_sum(n, [g, s, eps](int64_t i) {
    const float gi = g[i], g2 = gi * gi, g3 = g2 * gi;
    const float alpha = gi != 0.f ? g2 / (2.f * g2 + s * g3 + eps) : 0.f;
    return (gi > 0.f ? gi : 0.f) * alpha;
  });
}

SEG_XAI_CLONES float gradcampp_weight_scaled(const float* r, int64_t n, float wk, float s,
                                             float eps) {
  return lane_sum(n, [r, wk, s, eps](int64_t i) {
    const float gi = wk * r[i], g2 = gi * gi, g3 = g2 * gi;
    const float alpha = gi != 0.f ? g2 / (2.f * g2 + s * g3 + eps) : 0.f;
    return (gi > 0.f ? gi : 0.f) * alpha;
  });
}

SEG_XAI_CLONES void blend_u8(const uint8_t* x, const float* heat, float alpha_a, uint8_t* y,
                             int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float v = std::floor(alpha_a * float(x[i]) + heat[i] + 0.5f);
    v = v > 0.f ? v : 0.f;
    y[i] = uint8_t(int32_t(v < 255.f ? v : 255.f));
  }
}

SEG_XAI_CLONES void colour_index(const float* m, int32_t* idx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float v = m[i] > 0.f ? m[i] : 0.f;  // NaN → 0
    v = v < 1.f ? v : 1.f;
    idx[i] = int32_t(v * 255.f);
  }
}

SEG_XAI_CLONES void argmax_step(const float* x, float* best, int32_t* label, int32_t l, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {  // branch-free selects, so it vectorises
    const bool take = x[i] > best[i] || (x[i] != x[i] && best[i] == best[i]);
    best[i] = take ? x[i] : best[i];
    label[i] = take ? l : label[i];
  }
}

SEG_XAI_CLONES void widen_i32(const int32_t* x, int64_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i];
}

SEG_XAI_CLONES void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

SEG_XAI_CLONES void mul_acc(const float* g, const float* x, float* y, int64_t n, Product product) {
  if (product == Product::ReluGrad)
    for (int64_t i = 0; i < n; ++i) y[i] += (g[i] > 0.f ? g[i] : 0.f) * x[i];
  else if (product == Product::ReluProduct)
    for (int64_t i = 0; i < n; ++i) {
      const float v = g[i] * x[i];
      y[i] += v > 0.f ? v : 0.f;
    }
  else
    for (int64_t i = 0; i < n; ++i) y[i] += g[i] * x[i];
}

SEG_XAI_CLONES void lerp(const float* x0, const float* x1, float w0, float w1, float* y,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x0[i] * w0 + x1[i] * w1;
}

SEG_XAI_CLONES void lerp_minmax_apply(const float* x0, const float* x1, float w0, float w1,
                                      float lo, float inv_denom, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x0[i] * w0 + x1[i] * w1;
    const float t = ((v > 0.f ? v : 0.f) - lo) * inv_denom;
    y[i] = t < 0.f ? 0.f : (t > 1.f ? 1.f : t);
  }
}

SEG_XAI_CLONES void gather_lerp(const float* x, const int32_t* i0, const int32_t* i1,
                                const float* l0, const float* l1, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = x[i0[j]] * l0[j] + x[i1[j]] * l1[j];
}

// Same resolver and priority as the clones above, so this reports the clone actually running.
// GCC emits the resolver only in a translation unit that calls the versions, hence the wrapper.
#if SEG_XAI_FMV
__attribute__((target("default"))) static const char* simd_clone() { return "scalar"; }
__attribute__((target("avx2"))) static const char* simd_clone() { return "avx2"; }
__attribute__((target("avx512f"))) static const char* simd_clone() { return "avx512"; }
#else
static const char* simd_clone() { return "scalar"; }
#endif
const char* simd_level() { return simd_clone(); }

}  // namespace seg_xai::cpu
