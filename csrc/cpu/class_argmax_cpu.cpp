#include <algorithm>
#include <vector>

#include "loops.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// logits: float32 [B,L,H,W] → labels: int64 [B,H,W], the argmax over L. Strictly greater:
// ties keep the lowest class; the first NaN wins (as torch.argmax). With use_counts, counts
// int64 [B,L] receives each image's label histogram, counted per thread while the row's labels
// are still in L1 and summed at the end (no second pass over the labels).
void class_argmax_cpu(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                      const Exec& exec) {
  const int64_t B = logits.shape[0], L = logits.shape[1], H = logits.shape[2], W = logits.shape[3];
  const int64_t HW = H * W;
  const float* Y = logits.ptr<float>();
  int64_t* label = labels.ptr<int64_t>();
  int64_t* total = use_counts ? counts.ptr<int64_t>() : nullptr;
  if (total) std::fill_n(total, B * L, int64_t(0));
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> best(W);
    std::vector<int32_t> lab(W);  // 32-bit lanes vectorise twice as wide; widened on the way out
    // This thread's histograms, four interleaved: neighbouring pixels mostly share a label, and
    // with one histogram each increment would wait for the store of the one before.
    const int64_t BL = B * L;
    std::vector<int64_t> mine(total ? 4 * BL : 0);
#pragma omp for schedule(static)
    for (int64_t by = 0; by < B * H; ++by) {
      const int64_t b = by / H, p0 = (by % H) * W;
      std::copy_n(Y + b * L * HW + p0, W, best.data());
      std::fill(lab.begin(), lab.end(), 0);
      for (int64_t l = 1; l < L; ++l)
        argmax_step(Y + (b * L + l) * HW + p0, best.data(), lab.data(), int32_t(l), W);
      widen_i32(lab.data(), label + b * HW + p0, W);
      if (total) {
        int64_t* h = mine.data() + b * L;
        int64_t x = 0;
        for (; x + 4 <= W; x += 4) {
          ++h[lab[x]];
          ++h[BL + lab[x + 1]];
          ++h[2 * BL + lab[x + 2]];
          ++h[3 * BL + lab[x + 3]];
        }
        for (; x < W; ++x) ++h[lab[x]];
      }
    }
    if (total) {
#pragma omp critical(seg_xai_class_argmax_counts)
      for (int64_t i = 0; i < BL; ++i) total[i] += mine[i] + mine[BL + i] + mine[2 * BL + i] + mine[3 * BL + i];
    }
  }
}

}  // namespace seg_xai::cpu
