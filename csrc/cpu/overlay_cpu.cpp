#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// images: uint8 [B,H,W,3], maps: float32 [B,h,w], lut: uint8 [256,3] → out: uint8 [B,H,W,3].
// Parallel over output rows; a map row is resized on the fly when (h,w) ≠ (H,W).
void overlay_cpu(const TensorView& images, const TensorView& maps, const TensorView& lut,
                 double alpha, const TensorView& out, const Exec& exec) {
  const int64_t B = images.shape[0], H = images.shape[1], W = images.shape[2];
  const int64_t h = maps.shape[1], w = maps.shape[2];
  const bool resize = h != H || w != W;
  const AxisTable ty(h, H, false), tx(w, W, false);
  // As the reference: (1 − alpha) and alpha become float32 scalars, each product is rounded.
  const float a_img = float(1.0 - alpha), a_heat = float(alpha);
  const uint8_t* img = images.ptr<uint8_t>();
  const uint8_t* table = lut.ptr<uint8_t>();
  uint8_t* dst = out.ptr<uint8_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> r0(W), r1(W), row(W);
#pragma omp for schedule(static)
    for (int64_t by = 0; by < B * H; ++by) {
      const int64_t b = by / H, y = by % H;
      const float* m = maps.ptr<float>() + b * h * w;
      const float* mrow = m + y * w;
      if (resize) {
        gather_lerp(m + ty.i0[y] * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(), r0.data(), W);
        gather_lerp(m + ty.i1[y] * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(), r1.data(), W);
        lerp(r0.data(), r1.data(), ty.l0[y], ty.l1[y], row.data(), W);
        mrow = row.data();
      }
      const uint8_t* in = img + by * W * 3;
      uint8_t* o = dst + by * W * 3;
      for (int64_t x = 0; x < W; ++x) {
        const float v = std::fmin(std::fmax(mrow[x], 0.f), 1.f) * 255.f;
        const uint8_t* heat = table + int(v) * 3;  // truncation, as np.uint8(255·m)
        for (int ch = 0; ch < 3; ++ch) {
          const float blend = a_img * float(in[x * 3 + ch]) + a_heat * float(heat[ch]);
          o[x * 3 + ch] = uint8_t(std::fmin(std::fmax(std::floor(blend + 0.5f), 0.f), 255.f));
        }
      }
    }
  }
}

}  // namespace seg_xai::cpu
