#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// One thread per pixel: argmax over L (ties → lowest index, the first NaN wins, as
// torch.argmax). logits: [B,L,H,W] → labels: int64 [B,H,W].
template <typename T>
__global__ void argmax_kernel(const T* logits, int64_t* labels, int64_t L, int64_t HW, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = b*H*W + p
  if (i >= total) return;
  const T* y = logits + (i / HW) * L * HW + i % HW;
  float best = to_float(y[0]);
  int64_t label = 0;
  for (int64_t l = 1; l < L; ++l) {
    const float v = to_float(y[l * HW]);
    if (v > best || (v != v && best == best)) best = v, label = l;
  }
  labels[i] = label;
}

void class_argmax_cuda(const TensorView& logits, const TensorView& labels, const Exec& exec) {
  DeviceGuard guard(logits);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = logits.shape[0], L = logits.shape[1], HW = logits.shape[2] * logits.shape[3];
  dispatch_float(logits.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    argmax_kernel<<<blocks_for(B * HW), kThreads, 0, st>>>(logits.ptr<T>(), labels.ptr<int64_t>(), L, HW, B * HW);
    SEG_XAI_LAUNCH_CHECK();
  });
}

}  // namespace seg_xai::cuda
