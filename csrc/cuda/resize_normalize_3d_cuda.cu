#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// Value of output voxel i of the flattened volumes [M,D,H,W]: the trilinear sample
// (align_corners=False) of src [M,d,h,w], combined in ATen's order (x, then y, then z).
template <typename T>
struct Sampler3 {
  const T* src;
  int64_t d, h, w, D, H, W;
  float sz, sy, sx;
  __device__ float operator()(int64_t i) const {
    const int64_t n = D * H * W, m = i / n, p = i % n;
    const AxisTap tz = axis_tap(p / (H * W), d, sz, false);
    const T* vol = src + m * d * h * w;
    const float a = bilinear(vol + tz.i0 * h * w, h, w, sy, sx, (p / W) % H, p % W);
    const float b = bilinear(vol + tz.i1 * h * w, h, w, sy, sx, (p / W) % H, p % W);
    return a * tz.l0 + b * tz.l1;
  }
};

// Pass 1: per-volume min/max of relu(sample) into ws. One thread per output voxel; a warp that
// straddles two volumes falls back to per-lane atomics.
template <typename T>
__global__ void reduce3_kernel(Sampler3<T> s, int* ws, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = s.D * s.H * s.W;
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

// Pass 2: the sample again (cheaper than a float32 round trip), written normalised.
template <typename T>
__global__ void apply3_kernel(Sampler3<T> s, const int* ws, float* out, int64_t total, float eps) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) out[i] = minmax_scale(s(i), ws, i / (s.D * s.H * s.W), eps);
}

void resize_normalize_3d_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                              float eps, const Exec& exec) {
  DeviceGuard guard(maps);
  const cudaStream_t st = stream_of(exec);
  const int64_t M = maps.shape[0], total = out.numel();
  int* ws = minmax.ptr<int>();
  minmax_init(ws, M, st);
  dispatch_float(maps.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Sampler3<T> s{maps.ptr<T>(), maps.shape[1], maps.shape[2], maps.shape[3],
                  out.shape[1], out.shape[2], out.shape[3],
                  axis_scale(maps.shape[1], out.shape[1], false),
                  axis_scale(maps.shape[2], out.shape[2], false),
                  axis_scale(maps.shape[3], out.shape[3], false)};
    reduce3_kernel<<<blocks_for(total), kThreads, 0, st>>>(s, ws, total);
    SEG_XAI_LAUNCH_CHECK();
    apply3_kernel<<<blocks_for(total), kThreads, 0, st>>>(s, ws, out.ptr<float>(), total, eps);
    SEG_XAI_LAUNCH_CHECK();
  });
}

}  // namespace seg_xai::cuda
