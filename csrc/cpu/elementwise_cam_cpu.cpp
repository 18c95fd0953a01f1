#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// activations: [B,C,h,w], gradients: [B,K,C,h,w] → out: [B,K,h,w].
// Parallel over (b, k, tile of positions); G[b,k] is one contiguous [C,h·w] block, read once.
void elementwise_cam_cpu(const TensorView& activations, const TensorView& gradients,
                         Method method, const TensorView& out, float eps, const Exec& exec) {
  constexpr int64_t kTile = 1024;
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t n = gradients.shape[3] * gradients.shape[4];
  const int64_t tiles = (n + kTile - 1) / kTile;
  const Product product = method == Method::LayerCAM            ? Product::ReluGrad
                          : method == Method::GradCAMElementWise ? Product::ReluProduct
                                                                 : Product::Plain;
  const float* A = activations.ptr<float>();
  const float* G = gradients.ptr<float>();
  float* O = out.ptr<float>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> part(kTile);  // per-chunk partial sums (see kChannelChunk)
#pragma omp for schedule(static)
    for (int64_t mt = 0; mt < B * K * tiles; ++mt) {
      const int64_t m = mt / tiles, b = m / K, p0 = (mt % tiles) * kTile;
      const int64_t len = std::min(kTile, n - p0);
      float* o = O + m * n + p0;
      std::fill_n(o, len, 0.f);
      for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk) {
        std::fill_n(part.data(), len, 0.f);
        for (int64_t c = c0; c < std::min(C, c0 + kChannelChunk); ++c)
          mul_acc(G + (m * C + c) * n + p0, A + (b * C + c) * n + p0, part.data(), len, product);
        axpy(1.f, part.data(), o, len);
      }
    }
  }
  normalize_all(O, B * K, n, eps, exec.num_threads);
}

}  // namespace seg_xai::cpu
