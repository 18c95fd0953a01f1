#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// activations: [B,C,h,w], gradients: [B,K,C,h,w] → out: [B,K,h,w].
// Parallel over the B·K maps; per channel the gradient map is pooled once into a small
// [ceil(h/s), ceil(w/s)] table, then every position reads its window's value (the nearest
// upsample) and multiplies it with A. Channels are summed in chunks of kChannelChunk, as
// elementwise_cam, so the rounding stays close to torch's sum.
void pooled_cam_cpu(const TensorView& activations, const TensorView& gradients, int64_t pool,
                    bool mean, const TensorView& out, float eps, const Exec& exec) {
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t h = gradients.shape[3], w = gradients.shape[4], n = h * w;
  const int64_t ph = (h + pool - 1) / pool, pw = (w + pool - 1) / pool;
  const float* A = activations.ptr<float>();
  const float* G = gradients.ptr<float>();
  float* O = out.ptr<float>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> part(n), table(ph * pw), g_row(w);
#pragma omp for schedule(dynamic, 1)
    for (int64_t m = 0; m < B * K; ++m) {
      const int64_t b = m / K;
      float* o = O + m * n;
      std::fill_n(o, n, 0.f);
      for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk) {
        std::fill(part.begin(), part.end(), 0.f);
        for (int64_t c = c0; c < std::min(C, c0 + kChannelChunk); ++c) {
          const float* g = G + (m * C + c) * n;
          const float* a = A + (b * C + c) * n;
          for (int64_t wy = 0; wy < ph; ++wy) {  // pool: one table row per window row
            const int64_t y0 = wy * pool, y1 = std::min(h, y0 + pool);
            for (int64_t wx = 0; wx < pw; ++wx) {
              const int64_t x0 = wx * pool, x1 = std::min(w, x0 + pool);
              float v = mean ? 0.f : g[y0 * w + x0];
              for (int64_t y = y0; y < y1; ++y)
                for (int64_t x = x0; x < x1; ++x) v = mean ? v + g[y * w + x] : std::max(v, g[y * w + x]);
              table[wy * pw + wx] = mean ? v / float((y1 - y0) * (x1 - x0)) : v;
            }
          }
          for (int64_t y = 0; y < h; ++y) {  // nearest upsample, then the product
            const float* t = table.data() + (y / pool) * pw;
            for (int64_t x = 0; x < w; ++x) g_row[x] = t[x / pool];
            mul_acc(g_row.data(), a + y * w, part.data() + y * w, w, Product::Plain);
          }
        }
        axpy(1.f, part.data(), o, n);
      }
    }
  }
  normalize_all(O, B * K, n, eps, exec.num_threads);
}

}  // namespace seg_xai::cpu
