#include <algorithm>
#include <vector>

#include "loops.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// logits: float32 [B,L,H,W] → labels: int64 [B,H,W], the argmax over L. Strictly greater:
// ties keep the lowest class; the first NaN wins (as torch.argmax).
void class_argmax_cpu(const TensorView& logits, const TensorView& labels, const Exec& exec) {
  const int64_t B = logits.shape[0], L = logits.shape[1], H = logits.shape[2], W = logits.shape[3];
  const int64_t HW = H * W;
  const float* Y = logits.ptr<float>();
  int64_t* label = labels.ptr<int64_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> best(W);
    std::vector<int32_t> lab(W);  // 32-bit lanes vectorise twice as wide; widened on the way out
#pragma omp for schedule(static)
    for (int64_t by = 0; by < B * H; ++by) {
      const int64_t b = by / H, p0 = (by % H) * W;
      std::copy_n(Y + b * L * HW + p0, W, best.data());
      std::fill(lab.begin(), lab.end(), 0);
      for (int64_t l = 1; l < L; ++l)
        argmax_step(Y + (b * L + l) * HW + p0, best.data(), lab.data(), int32_t(l), W);
      widen_i32(lab.data(), label + b * HW + p0, W);
    }
  }
}

}  // namespace seg_xai::cpu
