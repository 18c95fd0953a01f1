#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// Output rows that bound every row's values: along y, output row y is the lerp
// (1−l1)·R[i0] + l1·R[i1] of two source rows, affine in l1 for a given pair (i0, i1), so over the
// rows sharing a pair each column's extremes lie at the smallest and largest l1, i.e. the first
// and last row of the pair's run (y is monotone). ReLU is monotone, so the same holds after it.
static std::vector<int64_t> bounding_rows(const AxisTable& ty) {
  std::vector<int64_t> rows;
  const int64_t H = int64_t(ty.i0.size());
  for (int64_t y = 0; y < H; ++y) {
    const bool first = y == 0 || ty.i0[y] != ty.i0[y - 1] || ty.i1[y] != ty.i1[y - 1];
    const bool last = y == H - 1 || ty.i0[y] != ty.i0[y + 1] || ty.i1[y] != ty.i1[y + 1];
    if (first || last) rows.push_back(y);
  }
  return rows;
}

// maps: float32 [M,h,w] → out: float32|float16 [M,H,W]. One map per thread, in two passes over
// its output rows: the first interpolates the bounding rows (above: 2 per source row when
// upsampling, e.g. 128 of 512) into an L1-resident buffer for the min/max only, the second
// interpolates every row and writes it normalised in the same loop. The resized map is thus
// written once and never read back: with a 512² map (1 MiB, beyond L2) that replaces a write +
// read + write of memory by one write. The min/max equal the exact ones up to the last ulp of
// the lerp's rounding; values are clamped to [0, 1] so that ulp cannot leave the range.
// The horizontally resized source rows ([h,W]) stay in cache across both passes.
void resize_normalize_cpu(const TensorView& maps, const TensorView& out, float eps,
                          const Exec& exec) {
  const int64_t M = maps.shape[0], h = maps.shape[1], w = maps.shape[2];
  const int64_t H = out.shape[1], W = out.shape[2];
  const AxisTable ty(h, H, false), tx(w, W, false);
  const std::vector<int64_t> bounds = bounding_rows(ty);
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
      for (const int64_t y : bounds) {
        lerp(rows.data() + ty.i0[y] * W, rows.data() + ty.i1[y] * W, ty.l0[y], ty.l1[y], line.data(), W);
        const MinMax r = relu_min_max(line.data(), W);
        mm.lo = r.lo < mm.lo ? r.lo : mm.lo, mm.hi = r.hi > mm.hi ? r.hi : mm.hi;
      }
      const float inv_denom = 1.f / ((mm.hi - mm.lo) + eps);
      for (int64_t y = 0; y < H; ++y) {
        const int64_t at = (m * H + y) * W;
        float* dst = direct ? out.ptr<float>() + at : line.data();
        lerp_minmax_apply(rows.data() + ty.i0[y] * W, rows.data() + ty.i1[y] * W, ty.l0[y], ty.l1[y],
                          mm.lo, inv_denom, dst, W);
        if (!direct) store(dst, out, at, W);
      }
    }
  }
}

}  // namespace seg_xai::cpu
