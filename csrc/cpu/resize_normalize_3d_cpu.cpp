#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// maps: float32 [M,d,h,w] → out: float32 [M,D,H,W]. One volume per thread. The trilinear resize
// is separable and taken in ATen's order (x, then y, then z): every source slice is resized in
// its plane into a [d,H,W] buffer (rows along x, then lerps of rows along y), then each output
// slice is the lerp of two buffered slices along z, written straight into `out` while its
// ReLU'd min/max is tracked; a last pass scales the volume in place.
void resize_normalize_3d_cpu(const TensorView& maps, const TensorView& out, float eps,
                             const Exec& exec) {
  const int64_t M = maps.shape[0], d = maps.shape[1], h = maps.shape[2], w = maps.shape[3];
  const int64_t D = out.shape[1], H = out.shape[2], W = out.shape[3];
  const AxisTable tz(d, D, false), ty(h, H, false), tx(w, W, false);
  const int64_t plane = H * W;
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> rows(h * W), planes(d * plane);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const float* src = maps.ptr<float>() + m * d * h * w;
      for (int64_t z = 0; z < d; ++z) {
        for (int64_t r = 0; r < h; ++r)
          gather_lerp(src + (z * h + r) * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(),
                      rows.data() + r * W, W);
        for (int64_t y = 0; y < H; ++y)
          lerp(rows.data() + ty.i0[y] * W, rows.data() + ty.i1[y] * W, ty.l0[y], ty.l1[y],
               planes.data() + z * plane + y * W, W);
      }
      float* dst = out.ptr<float>() + m * D * plane;
      MinMax mm{3.4028235e38f, 0.f};
      for (int64_t z = 0; z < D; ++z) {
        float* slice = dst + z * plane;
        lerp(planes.data() + tz.i0[z] * plane, planes.data() + tz.i1[z] * plane, tz.l0[z], tz.l1[z],
             slice, plane);
        const MinMax r = relu_min_max(slice, plane);
        mm.lo = r.lo < mm.lo ? r.lo : mm.lo, mm.hi = r.hi > mm.hi ? r.hi : mm.hi;
      }
      minmax_apply(dst, dst, D * plane, mm.lo, (mm.hi - mm.lo) + eps);
    }
  }
}

}  // namespace seg_xai::cpu
