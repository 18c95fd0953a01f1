#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// maps: float32 [M,h,w] → out: float32|float16 [M,H,W]. One map per thread, in two passes over
// its output rows: the first interpolates each row into an L1-resident buffer for the min/max
// only, the second interpolates it again (the same float operations, so the same values) and
// writes it normalised. The resized map is thus written once and never read back: with a
// 512² map (1 MiB, beyond L2) that replaces a write + read + write of memory by one write.
// The horizontally resized source rows ([h,W]) stay in cache across both passes.
void resize_normalize_cpu(const TensorView& maps, const TensorView& out, float eps,
                          const Exec& exec) {
  const int64_t M = maps.shape[0], h = maps.shape[1], w = maps.shape[2];
  const int64_t H = out.shape[1], W = out.shape[2];
  const AxisTable ty(h, H, false), tx(w, W, false);
  const bool direct = out.dtype == DType::Float32;
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> rows(h * W), line(W);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const float* src = maps.ptr<float>() + m * h * w;
      for (int64_t r = 0; r < h; ++r)
        gather_lerp(src + r * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(),
                    rows.data() + r * W, W);
      MinMax mm{3.4028235e38f, 0.f};
      for (int64_t y = 0; y < H; ++y) {
        lerp(rows.data() + ty.i0[y] * W, rows.data() + ty.i1[y] * W, ty.l0[y], ty.l1[y], line.data(), W);
        const MinMax r = relu_min_max(line.data(), W);
        mm.lo = r.lo < mm.lo ? r.lo : mm.lo, mm.hi = r.hi > mm.hi ? r.hi : mm.hi;
      }
      const float denom = (mm.hi - mm.lo) + eps;
      for (int64_t y = 0; y < H; ++y) {
        const int64_t at = (m * H + y) * W;
        float* dst = direct ? out.ptr<float>() + at : line.data();
        lerp(rows.data() + ty.i0[y] * W, rows.data() + ty.i1[y] * W, ty.l0[y], ty.l1[y], dst, W);
        minmax_apply(dst, dst, W, mm.lo, denom);
        if (!direct) store(dst, out, at, W);
      }
    }
  }
}

}  // namespace seg_xai::cpu
