#include <algorithm>
#include <cmath>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

namespace {

// Elements of one block of the accumulation: its running sums stay in L1 across the G inputs.
constexpr int64_t kBlock = 1024;

// One (class i, element block [r0, r1)): s[r] = Σ_g f(w_g·m_g[r]·grads[i,g,r]), q[r] = Σ_g f(·)²,
// added to total[row], total_sq[row]. The inner loops run over r (contiguous) and vectorise.
template <bool kMult, bool kAbs, bool kSq>
void accumulate_block(const float* g, const float* w, const float* mult, int64_t G, int64_t R,
                      int64_t r0, int64_t r1, float* total, float* total_sq) {
  float s[kBlock], q[kBlock];
  const int64_t len = r1 - r0;
  std::fill(s, s + len, 0.f);
  if (kSq) std::fill(q, q + len, 0.f);
  for (int64_t j = 0; j < G; ++j) {
    const float* gj = g + j * R + r0;
    const float* mj = kMult ? mult + j * R + r0 : nullptr;
    const float wj = w[j];
#pragma omp simd
    for (int64_t r = 0; r < len; ++r) {
      float a = wj * gj[r];
      if (kMult) a *= mj[r];
      if (kAbs) a = std::fabs(a);
      s[r] += a;
      if (kSq) q[r] += a * a;
    }
  }
#pragma omp simd
  for (int64_t r = 0; r < len; ++r) total[r0 + r] += s[r];
  if (kSq) {
#pragma omp simd
    for (int64_t r = 0; r < len; ++r) total_sq[r0 + r] += q[r];
  }
}

template <bool kMult, bool kAbs, bool kSq>
void accumulate(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                const TensorView& rows, const TensorView& total, const TensorView& total_sq,
                const Exec& exec) {
  const int64_t n = grads.shape[0], G = grads.shape[1], R = grads.shape[2];
  const int64_t blocks = (R + kBlock - 1) / kBlock;
  const float* g = grads.ptr<float>();
  const float* w = weights.ptr<float>();
  const float* m = kMult ? mult.ptr<float>() : nullptr;
  const int64_t* row = rows.ptr<int64_t>();
  // rows are distinct (checked by the wrapper), so (class, block) pairs write disjoint memory
#pragma omp parallel for collapse(2) schedule(static) num_threads(exec.num_threads)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kBlock, r1 = std::min(R, r0 + kBlock);
      float* t = total.ptr<float>() + row[i] * R;
      float* tq = kSq ? total_sq.ptr<float>() + row[i] * R : nullptr;
      accumulate_block<kMult, kAbs, kSq>(g + i * G * R, w, m, G, R, r0, r1, t, tq);
    }
}

}  // namespace

void attribution_accumulate_cpu(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                                bool use_mult, const TensorView& rows, const TensorView& total,
                                const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec) {
  const int key = (use_mult ? 4 : 0) | (abs ? 2 : 0) | (use_sq ? 1 : 0);
  switch (key) {
    case 0: accumulate<false, false, false>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 1: accumulate<false, false, true>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 2: accumulate<false, true, false>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 3: accumulate<false, true, true>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 4: accumulate<true, false, false>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 5: accumulate<true, false, true>(grads, weights, mult, rows, total, total_sq, exec); break;
    case 6: accumulate<true, true, false>(grads, weights, mult, rows, total, total_sq, exec); break;
    default: accumulate<true, true, true>(grads, weights, mult, rows, total, total_sq, exec); break;
  }
}

// attributions: float32 [B,K,C,N] → out: float32 [B,K,N], the channel sum, then ReLU + min-max.
// One map per thread; the channel sum is axpy over contiguous rows.
void attribution_maps_cpu(const TensorView& attributions, const TensorView& out, bool normalize, float eps,
                          const Exec& exec) {
  const int64_t M = attributions.shape[0] * attributions.shape[1];
  const int64_t C = attributions.shape[2], N = attributions.shape[3];
  const float* src = attributions.ptr<float>();
  float* dst = out.ptr<float>();
#pragma omp parallel for schedule(static) num_threads(exec.num_threads)
  for (int64_t m = 0; m < M; ++m) {
    float* y = dst + m * N;
    const float* x = src + m * C * N;
    std::memcpy(y, x, N * sizeof(float));
    for (int64_t c = 1; c < C; ++c) axpy(1.f, x + c * N, y, N);
    if (normalize) normalize_inplace(y, N, eps);
  }
}

}  // namespace seg_xai::cpu
