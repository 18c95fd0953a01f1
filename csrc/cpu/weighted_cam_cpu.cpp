#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// activations: [B,C,h,w], weights: [B,K,C] → out: [B,K,h,w].
// Parallel over (b, tile of positions): each activation tile is loaded once and accumulated
// into the K output tiles (K·kTile floats stay in L1/L2), so A is streamed once for all classes.
void weighted_cam_cpu(const TensorView& activations, const TensorView& weights,
                      const TensorView& out, float eps, const Exec& exec) {
  constexpr int64_t kTile = 256;
  const int64_t B = activations.shape[0], C = activations.shape[1];
  const int64_t n = activations.shape[2] * activations.shape[3], K = weights.shape[1];
  const int64_t tiles = (n + kTile - 1) / kTile;
  const float* A = activations.ptr<float>();
  const float* Wt = weights.ptr<float>();
  float* O = out.ptr<float>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> part(K * kTile);  // per-chunk partial sums (see kChannelChunk)
#pragma omp for schedule(static)
    for (int64_t bt = 0; bt < B * tiles; ++bt) {
      const int64_t b = bt / tiles, p0 = (bt % tiles) * kTile, len = std::min(kTile, n - p0);
      for (int64_t k = 0; k < K; ++k) std::fill_n(O + (b * K + k) * n + p0, len, 0.f);
      for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk) {
        std::fill(part.begin(), part.end(), 0.f);
        for (int64_t c = c0; c < std::min(C, c0 + kChannelChunk); ++c) {
          const float* a = A + (b * C + c) * n + p0;
          for (int64_t k = 0; k < K; ++k) axpy(Wt[(b * K + k) * C + c], a, part.data() + k * kTile, len);
        }
        for (int64_t k = 0; k < K; ++k) axpy(1.f, part.data() + k * kTile, O + (b * K + k) * n + p0, len);
      }
    }
  }
  normalize_all(O, B * K, n, eps, exec.num_threads);
}

}  // namespace seg_xai::cpu
