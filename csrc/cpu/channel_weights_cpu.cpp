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

}  // namespace seg_xai::cpu
