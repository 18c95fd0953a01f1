// Hot inner loops of the CPU kernels. Each is compiled for AVX-512, AVX2 and baseline x86-64
// (GCC/Clang function multiversioning); the loader picks one clone per process from the CPU's
// features, and simd_level() reports the same choice.
#pragma once

#include <cstdint>

namespace seg_xai::cpu {

struct MinMax {
  float lo, hi;
};

// Min and max of relu(x). x: [n]
MinMax relu_min_max(const float* x, int64_t n);
// y = (relu(x) − lo) / denom. x, y: [n] (may alias)
void minmax_apply(const float* x, float* y, int64_t n, float lo, float denom);
// Σ x. x: [n]
float sum(const float* x, int64_t n);
// Σ x⊙y. x, y: [n]
float dot(const float* x, const float* y, int64_t n);
// Grad-CAM++ weight Σ relu(g)·α, α = g²/(2g² + s·g³ + eps) where g ≠ 0, else 0. g: [n]
float gradcampp_weight(const float* g, int64_t n, float s, float eps);
// The same with g = wk·r[i] (linear heads: g_kc(u) = W_kc·R_k(u)). r: [n]
float gradcampp_weight_scaled(const float* r, int64_t n, float wk, float s, float eps);
// y[i] = alpha_a·x[i] (uint8) + heat[i] (float), rounded half up and clamped to uint8; the
// overlay blend in the reference's float32 operation order. x, heat, y: [n]
void blend_u8(const uint8_t* x, const float* heat, float alpha_a, uint8_t* y, int64_t n);
// idx[i] = trunc(255·clamp(m[i], 0, 1)) (NaN → 0). m, idx: [n]
void colour_index(const float* m, int32_t* idx, int64_t n);
// One class of a running argmax: where x beats best (strictly greater, or the first NaN), best
// takes x and label takes l. x, best, label: [n]
void argmax_step(const float* x, float* best, int32_t* label, int32_t l, int64_t n);
// y[i] = int64(x[i]). x, y: [n]
void widen_i32(const int32_t* x, int64_t* y, int64_t n);
// y += a·x. x, y: [n]
void axpy(float a, const float* x, float* y, int64_t n);
// What mul_acc accumulates: g⊙x (hirescam), relu(g)⊙x (layercam), relu(g⊙x) (gradcam_elementwise).
enum class Product { Plain, ReluGrad, ReluProduct };
// y += f(g, x) element-wise, f as `product`. g, x, y: [n]
void mul_acc(const float* g, const float* x, float* y, int64_t n, Product product);
// y = x0·w0 + x1·w1, the bilinear lerp of two rows in ATen's operation order. x0, x1, y: [n]
void lerp(const float* x0, const float* x1, float w0, float w1, float* y, int64_t n);
// y = clamp((relu(x0·w0 + x1·w1) − lo) · inv_denom, 0, 1): lerp then the min-max scaling in
// one pass, for a lo/denom found from some rows only (the clamp absorbs the last-ulp excess).
// A multiply by the reciprocal, not a divide: within 1 ulp of the division, and the divide's
// throughput made it the bottleneck of the resize (~0.6 ms of 1.3 for 21 maps of 512²). y: [n]
void lerp_minmax_apply(const float* x0, const float* x1, float w0, float w1, float lo,
                       float inv_denom, float* y, int64_t n);
// y[j] = x[i0[j]]·l0[j] + x[i1[j]]·l1[j] (one row of a horizontal bilinear pass). y: [n]
void gather_lerp(const float* x, const int32_t* i0, const int32_t* i1, const float* l0,
                 const float* l1, float* y, int64_t n);

const char* simd_level();

}  // namespace seg_xai::cpu
