#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// Value of output pixel i of the flattened maps: [M,H,W] (identity when resize is false).
template <typename T>
struct Sampler {
  const T* src;  // [M,h,w]
  int64_t h, w, H, W;
  float sy, sx;
  bool resize;
  __device__ float operator()(int64_t i) const {
    if (!resize) return to_float(src[i]);
    const int64_t m = i / (H * W), p = i % (H * W);
    return bilinear(src + m * h * w, h, w, sy, sx, p / W, p % W);
  }
};

// Pass 1: per-map min/max of relu(sample) into ws. One thread per output element.
template <typename T>
__global__ void reduce_kernel(Sampler<T> s, int* ws, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = s.H * s.W;
  // A warp may straddle two maps: reduce per map id within the warp by folding lane by lane.
  const float v = i < total ? relu0(s(i)) : 0.f;
  const int64_t m = i < total ? i / n : -1;
  const int64_t m0 = __shfl_sync(0xffffffffu, m, 0);
  const bool uniform = __all_sync(0xffffffffu, m == m0 || m < 0);
  if (uniform) {
    if (m0 >= 0) warp_minmax_atomic(i < total ? v : INFINITY, v, ws + 2 * m0);
  } else if (m >= 0) {
    atomicMin(ws + 2 * m, __float_as_int(v));
    atomicMax(ws + 2 * m + 1, __float_as_int(v));
  }
}

// Pass 2: recompute the sample (cheaper than a float32 round trip) and write it normalised.
template <typename T, typename O>
__global__ void apply_kernel(Sampler<T> s, const int* ws, O* out, int64_t total, float eps) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) store(out + i, minmax_scale(s(i), ws, i / (s.H * s.W), eps));
}

// maps: [M,h,w] → out: float32|float16 [M,H,W]; ws: int32 [M,2].
static void launch(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                   float eps, const Exec& exec) {
  DeviceGuard guard(maps);
  const cudaStream_t st = stream_of(exec);
  const int64_t M = maps.shape[0], total = out.numel();
  int* ws = minmax.ptr<int>();
  minmax_init(ws, M, st);
  dispatch_float(maps.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Sampler<T> s{maps.ptr<T>(), maps.shape[1], maps.shape[2], out.shape[1], out.shape[2],
                 axis_scale(maps.shape[1], out.shape[1], false),
                 axis_scale(maps.shape[2], out.shape[2], false),
                 maps.shape[1] != out.shape[1] || maps.shape[2] != out.shape[2]};
    reduce_kernel<<<blocks_for(total), kThreads, 0, st>>>(s, ws, total);
    SEG_XAI_LAUNCH_CHECK();
    if (out.dtype == DType::Float32)
      apply_kernel<<<blocks_for(total), kThreads, 0, st>>>(s, ws, out.ptr<float>(), total, eps);
    else
      apply_kernel<<<blocks_for(total), kThreads, 0, st>>>(s, ws, out.ptr<__half>(), total, eps);
    SEG_XAI_LAUNCH_CHECK();
  });
}

void resize_normalize_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                           float eps, const Exec& exec) {
  launch(maps, out, minmax, eps, exec);
}

}  // namespace seg_xai::cuda
