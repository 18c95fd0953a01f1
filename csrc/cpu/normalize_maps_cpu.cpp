#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {

// maps: float32 [M,h,w] → out: float32|float16 [M,h,w]. One map per thread.
void normalize_maps_cpu(const TensorView& maps, const TensorView& out, float eps,
                        const Exec& exec) {
  const int64_t M = maps.shape[0], n = maps.shape[1] * maps.shape[2];
  const float* src = maps.ptr<float>();
  const bool direct = out.dtype == DType::Float32;
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> tmp(direct ? 0 : n);  // float32 staging for a float16 output
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      float* dst = direct ? out.ptr<float>() + m * n : tmp.data();
      const MinMax r = relu_min_max(src + m * n, n);
      minmax_apply(src + m * n, dst, n, r.lo, (r.hi - r.lo) + eps);
      store(dst, out, m * n, n);
    }
  }
}

}  // namespace seg_xai::cpu
