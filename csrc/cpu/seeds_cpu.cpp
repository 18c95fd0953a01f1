#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {
namespace {

// Up*(M) = U_Hᵀ M U_W for every (b, k) map, one map per thread: each full-resolution row is
// pulled back along x into a w-long row, which is then added to its two source rows.
// mask(b, k, y, row): fills row[x] = M[b,k,y,x] for x in [0,W); out: [B,K,h,w].
template <typename MaskRow>
void pull_back(int64_t B, int64_t K, int64_t H, int64_t W, bool align_corners,
               const TensorView& out, const Exec& exec, MaskRow mask) {
  const int64_t h = out.shape[2], w = out.shape[3];
  const AxisTable ty(h, H, align_corners), tx(w, W, align_corners);
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> full(W), low(w);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < B * K; ++m) {
      float* seed = out.ptr<float>() + m * h * w;
      std::fill_n(seed, h * w, 0.f);
      for (int64_t y = 0; y < H; ++y) {
        if (!mask(m / K, m % K, y, full.data())) continue;  // empty row: nothing to pull back
        std::fill(low.begin(), low.end(), 0.f);
        for (int64_t x = 0; x < W; ++x) {
          low[tx.i0[x]] += full[x] * tx.l0[x];
          low[tx.i1[x]] += full[x] * tx.l1[x];
        }
        axpy(ty.l0[y], low.data(), seed + ty.i0[y] * w, w);
        axpy(ty.l1[y], low.data(), seed + ty.i1[y] * w, w);
      }
    }
  }
}

}  // namespace

// labels: int64 [B,H,W], classes: int64 [K] → out: [B,K,h,w]; the K masks are never stored.
void seeds_from_labels_cpu(const TensorView& labels, const TensorView& classes, bool align_corners,
                           const TensorView& out, const Exec& exec) {
  const int64_t B = labels.shape[0], H = labels.shape[1], W = labels.shape[2];
  const int64_t K = classes.shape[0], HW = H * W;
  const int64_t* cls = classes.ptr<int64_t>();
  const int64_t* label = labels.ptr<int64_t>();
  pull_back(B, K, H, W, align_corners, out, exec, [&](int64_t b, int64_t k, int64_t y, float* row) {
    const int64_t* lab = label + b * HW + y * W;
    bool any = false;
    for (int64_t x = 0; x < W; ++x) {
      row[x] = lab[x] == cls[k] ? 1.f : 0.f;
      any |= lab[x] == cls[k];
    }
    return any;
  });
}

// masks: float32 [B,K,H,W] → out: [B,K,h,w].
void seeds_from_masks_cpu(const TensorView& masks, bool align_corners, const TensorView& out,
                          const Exec& exec) {
  const int64_t B = masks.shape[0], K = masks.shape[1], H = masks.shape[2], W = masks.shape[3];
  const float* Mk = masks.ptr<float>();
  pull_back(B, K, H, W, align_corners, out, exec, [&](int64_t b, int64_t k, int64_t y, float* row) {
    const float* src = Mk + ((b * K + k) * H + y) * W;
    if (std::all_of(src, src + W, [](float v) { return v == 0.f; })) return false;  // boxes: most rows
    std::copy_n(src, W, row);
    return true;
  });
}

}  // namespace seg_xai::cpu
