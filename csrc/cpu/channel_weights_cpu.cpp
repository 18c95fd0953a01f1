#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// activations: [B,C,h,w], gradients: [B,K,C,h,w] → out: [B,K,C]; channel_sums: [B,C] scratch.
// S_c is summed once per (b, c); then the (b, k, c) gradient rows are reduced in memory order,
// so each thread streams one contiguous stretch of G (read exactly once, prefetcher-friendly).
void channel_weights_cpu(const TensorView& activations, const TensorView& gradients, Method method,
                         const TensorView& out, const TensorView& channel_sums, const Exec& exec) {
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t n = gradients.shape[3] * gradients.shape[4];
  const float* A = activations.ptr<float>();
  const float* G = gradients.ptr<float>();
  float* S = channel_sums.ptr<float>();
  float* Wt = out.ptr<float>();
  if (method != Method::GradCAM) {
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
    for (int64_t bc = 0; bc < B * C; ++bc) S[bc] = sum(A + bc * n, n);
  }
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
  for (int64_t row = 0; row < B * K * C; ++row) {  // row = (b*K + k)*C + c
    const int64_t c = row % C, bc = (row / (K * C)) * C + c;
    const float* g = G + row * n;
    switch (method) {
      case Method::GradCAM: Wt[row] = sum(g, n) / float(n); break;
      case Method::GradCAMPlusPlus: Wt[row] = gradcampp_weight(g, n, S[bc], kGradCamPPEps); break;
      default: Wt[row] = dot(g, A + bc * n, n) / (S[bc] + kXGradCamEps); break;  // XGradCAM
    }
  }
}

// activations_or_sums: [B,C,h,w] | [B,C], weight: [K,C], seeds: [B,K,h,w] → out: [B,K,C];
// channel_sums: [B,C] scratch. Only terms with g = W_kc·R_k(u) > 0 contribute, i.e. R_k(u) of the
// sign of W_kc, so each seed map is first split into its positive and its negative values (real
// seeds are sparse and non-negative: most rows then reduce over a short list, or none). Each
// (b, k, c) row is then one vectorised pass over the list of its sign, with the per-element
// float32 operations of the reference (the left-out terms are its relu(g)·α = 0·α = 0).
// NaN in R_k or W_kc gives NaN, as the reference.
void analytic_gradcampp_weights_cpu(const TensorView& activations_or_sums, const TensorView& weight,
                                    const TensorView& seeds, const TensorView& out,
                                    const TensorView& channel_sums, const Exec& exec) {
  const int64_t B = seeds.shape[0], K = seeds.shape[1], C = weight.shape[1];
  const int64_t n = seeds.shape[2] * seeds.shape[3];
  const float* R = seeds.ptr<float>();
  const float* Wk = weight.ptr<float>();
  float* Wt = out.ptr<float>();
  const float* S = activations_or_sums.ptr<float>();
  if (activations_or_sums.ndim == 4) {
    const int64_t na = activations_or_sums.shape[2] * activations_or_sums.shape[3];
    float* sums = channel_sums.ptr<float>();
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
    for (int64_t bc = 0; bc < B * C; ++bc) sums[bc] = sum(S + bc * na, na);
    S = sums;
  }
  // split[bk·n ...]: positive values of R[b,k] from the front, negative values from the back.
  std::vector<float> split(B * K * n);
  std::vector<int64_t> npos(B * K), nneg(B * K);
  std::vector<char> nan(B * K);
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
  for (int64_t bk = 0; bk < B * K; ++bk) {
    const float* r = R + bk * n;
    float* front = split.data() + bk * n;
    float* back = front + n;
    int64_t p = 0, q = 0;
    bool has_nan = false;
    for (int64_t u = 0; u < n; ++u) {
      if (r[u] > 0.f) front[p++] = r[u];
      else if (r[u] < 0.f) *(back - ++q) = r[u];
      else has_nan |= std::isnan(r[u]);
    }
    std::reverse(back - q, back);  // keep u order in both lists
    npos[bk] = p, nneg[bk] = q, nan[bk] = has_nan;
  }
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
  for (int64_t row = 0; row < B * K * C; ++row) {  // row = (b*K + k)*C + c
    const int64_t bk = row / C, c = row % C, b = bk / K, k = bk % K;
    const float wk = Wk[k * C + c], s = S[b * C + c];
    const float* list = split.data() + bk * n;
    if (nan[bk] || std::isnan(wk)) Wt[row] = kNaN;
    else if (wk > 0.f) Wt[row] = gradcampp_weight_scaled(list, npos[bk], wk, s, kGradCamPPEps);
    else if (wk < 0.f) Wt[row] = gradcampp_weight_scaled(list + n - nneg[bk], nneg[bk], wk, s, kGradCamPPEps);
    else Wt[row] = 0.f;
  }
}

}  // namespace seg_xai::cpu
