#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// maps: float32 [M,h,w] → out: float32|float16 [M,H,W]. One map per thread: the min-max needs
// the whole resized map, which stays in cache between the resize and the normalisation.
void resize_normalize_cpu(const TensorView& maps, const TensorView& out, float eps,
                          const Exec& exec) {
  const int64_t M = maps.shape[0], h = maps.shape[1], w = maps.shape[2];
  const int64_t H = out.shape[1], W = out.shape[2];
  const AxisTable ty(h, H, false), tx(w, W, false);
  const bool direct = out.dtype == DType::Float32;
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> rows(h * W), tmp(direct ? 0 : H * W);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      float* dst = direct ? out.ptr<float>() + m * H * W : tmp.data();
      resize_map(maps.ptr<float>() + m * h * w, h, w, ty, tx, rows.data(), dst);
      normalize_inplace(dst, H * W, eps);
      store(dst, out, m * H * W, H * W);
    }
  }
}

}  // namespace seg_xai::cpu
