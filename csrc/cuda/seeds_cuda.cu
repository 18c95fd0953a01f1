#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// Scatter value v at full-resolution pixel (y, x) onto its four low-resolution sources: the
// transpose of the bilinear upsample. seed: float32 [h,w].
__device__ __forceinline__ void scatter_adjoint(float* seed, float v, int64_t y, int64_t x,
                                                int64_t h, int64_t w, float sy, float sx,
                                                bool align_corners) {
  const AxisTap ty = axis_tap(y, h, sy, align_corners), tx = axis_tap(x, w, sx, align_corners);
  atomicAdd(seed + ty.i0 * w + tx.i0, v * ty.l0 * tx.l0);
  atomicAdd(seed + ty.i0 * w + tx.i1, v * ty.l0 * tx.l1);
  atomicAdd(seed + ty.i1 * w + tx.i0, v * ty.l1 * tx.l0);
  atomicAdd(seed + ty.i1 * w + tx.i1, v * ty.l1 * tx.l1);
}

// One thread per full-resolution pixel: scatter into every class k with classes[k] == its label.
// labels: int64 [B,H,W], classes: int64 [K] → out: [B,K,h,w] (zeroed).
__global__ void labels_kernel(const int64_t* labels, const int64_t* classes, float* out, int64_t H,
                              int64_t W, int64_t K, int64_t h, int64_t w, float sy, float sx,
                              bool align_corners, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = b*H*W + p
  if (i >= total) return;
  const int64_t HW = H * W, b = i / HW, p = i % HW, label = labels[i];
  for (int64_t k = 0; k < K; ++k)
    if (classes[k] == label)
      scatter_adjoint(out + (b * K + k) * h * w, 1.f, p / W, p % W, h, w, sy, sx, align_corners);
}

// One thread per mask element. masks: [B,K,H,W] → out: [B,K,h,w] (zeroed).
template <typename T>
__global__ void masks_kernel(const T* masks, float* out, int64_t H, int64_t W, int64_t h,
                             int64_t w, float sy, float sx, bool align_corners, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = m*H*W + p
  if (i >= total) return;
  const float v = to_float(masks[i]);
  if (v == 0.f) return;  // most of a mask is empty
  const int64_t m = i / (H * W), p = i % (H * W);
  scatter_adjoint(out + m * h * w, v, p / W, p % W, h, w, sy, sx, align_corners);
}

void seeds_from_labels_cuda(const TensorView& labels, const TensorView& classes,
                            bool align_corners, const TensorView& out, const Exec& exec) {
  DeviceGuard guard(labels);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = labels.shape[0], H = labels.shape[1], W = labels.shape[2];
  const int64_t h = out.shape[2], w = out.shape[3];
  SEG_XAI_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.numel() * sizeof(float), st));
  labels_kernel<<<blocks_for(B * H * W), kThreads, 0, st>>>(
      labels.ptr<int64_t>(), classes.ptr<int64_t>(), out.ptr<float>(), H, W, classes.shape[0], h, w,
      axis_scale(h, H, align_corners), axis_scale(w, W, align_corners), align_corners, B * H * W);
  SEG_XAI_LAUNCH_CHECK();
}

void seeds_from_masks_cuda(const TensorView& masks, bool align_corners, const TensorView& out,
                           const Exec& exec) {
  DeviceGuard guard(masks);
  const cudaStream_t st = stream_of(exec);
  const int64_t H = masks.shape[2], W = masks.shape[3], h = out.shape[2], w = out.shape[3];
  SEG_XAI_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.numel() * sizeof(float), st));
  dispatch_float(masks.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    masks_kernel<<<blocks_for(masks.numel()), kThreads, 0, st>>>(
        masks.ptr<T>(), out.ptr<float>(), H, W, h, w, axis_scale(h, H, align_corners),
        axis_scale(w, W, align_corners), align_corners, masks.numel());
    SEG_XAI_LAUNCH_CHECK();
  });
}

}  // namespace seg_xai::cuda
