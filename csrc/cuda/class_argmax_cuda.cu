#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// One thread per pixel: argmax over L (ties → lowest index, the first NaN wins, as
// torch.argmax). logits: [B,L,H,W] → labels: int64 [B,H,W]; counts (or nullptr): int64 [B,L],
// zeroed before the launch, each pixel adding one to its image's class.
template <typename T>
__global__ void argmax_kernel(const T* logits, int64_t* labels, int64_t* counts, int64_t L, int64_t HW,
                              int64_t total) {
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
  if (counts) atomicAdd(reinterpret_cast<unsigned long long*>(counts + (i / HW) * L + label), 1ULL);
}

void class_argmax_cuda(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                       const Exec& exec) {
  DeviceGuard guard(logits);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = logits.shape[0], L = logits.shape[1], HW = logits.shape[2] * logits.shape[3];
  int64_t* total = use_counts ? counts.ptr<int64_t>() : nullptr;
  if (total) SEG_XAI_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(int64_t) * B * L, st));
  dispatch_float(logits.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    argmax_kernel<<<blocks_for(B * HW), kThreads, 0, st>>>(logits.ptr<T>(), labels.ptr<int64_t>(), total, L, HW,
                                                           B * HW);
    SEG_XAI_LAUNCH_CHECK();
  });
}

}  // namespace seg_xai::cuda
