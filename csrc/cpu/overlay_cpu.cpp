#include <cstring>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// images: uint8 [B,H,W,3], maps: float32 [B,h,w], lut: uint8 [256,3] → out: uint8 [B,H,W,3].
// Parallel over output rows. Per row, every step is a vectorised loop (loops.cpp) except the
// 3-float LUT copy: the map row (resized when (h,w) ≠ (H,W), reusing the horizontally resized
// source rows of the previous output row), the colour indices, then the blend over the row's
// 3·W bytes. The LUT is pre-multiplied by alpha (the reference's float32 product alpha·heat), so
// the blend performs the reference's float32 operations in its order: exact, not ±1.
void overlay_cpu(const TensorView& images, const TensorView& maps, const TensorView& lut,
                 double alpha, const TensorView& out, const Exec& exec) {
  const int64_t B = images.shape[0], H = images.shape[1], W = images.shape[2];
  const int64_t h = maps.shape[1], w = maps.shape[2];
  const bool resize = h != H || w != W;
  const AxisTable ty(h, H, false), tx(w, W, false);
  // As the reference: (1 − alpha) and alpha become float32 scalars, each product is rounded.
  const float a_img = float(1.0 - alpha), a_heat = float(alpha);
  float heat_lut[256 * 3];  // alpha·LUT, float32 as the reference's alpha * heat
  for (int i = 0; i < 256 * 3; ++i) heat_lut[i] = a_heat * float(lut.ptr<uint8_t>()[i]);
  const uint8_t* img = images.ptr<uint8_t>();
  uint8_t* dst = out.ptr<uint8_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> r0(W), r1(W), row(W), heat(3 * W);
    std::vector<int32_t> idx(W);
    int64_t src0 = -1, src1 = -1, src_b = -1;  // map rows now in r0, r1 (and their image)
#pragma omp for schedule(static)
    for (int64_t by = 0; by < B * H; ++by) {
      const int64_t b = by / H, y = by % H;
      const float* m = maps.ptr<float>() + b * h * w;
      const float* mrow = m + y * w;
      if (resize) {
        const int64_t i0 = ty.i0[y], i1 = ty.i1[y];
        if (b != src_b || i0 != src0) {
          if (b == src_b && i0 == src1) std::swap(r0, r1), std::swap(src0, src1);
          else gather_lerp(m + i0 * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(), r0.data(), W);
        }
        if (b != src_b || i1 != src1)
          gather_lerp(m + i1 * w, tx.i0.data(), tx.i1.data(), tx.l0.data(), tx.l1.data(), r1.data(), W);
        src_b = b, src0 = i0, src1 = i1;
        lerp(r0.data(), r1.data(), ty.l0[y], ty.l1[y], row.data(), W);
        mrow = row.data();
      }
      colour_index(mrow, idx.data(), W);  // trunc(255·clamp(m)), as np.uint8(255·m)
      float* hp = heat.data();
      for (int64_t x = 0; x < W; ++x, hp += 3) std::memcpy(hp, heat_lut + 3 * idx[x], 3 * sizeof(float));
      blend_u8(img + by * W * 3, heat.data(), a_img, dst + by * W * 3, 3 * W);
    }
  }
}

}  // namespace seg_xai::cpu
