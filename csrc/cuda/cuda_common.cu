// The per-map min-max helpers declared in cuda_common.cuh, shared by the normalising kernels.
#include "cuda_common.cuh"

namespace seg_xai::cuda {

__global__ void minmax_init_kernel(int* ws, int64_t maps) {
  const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m < maps) ws[2 * m] = __float_as_int(INFINITY), ws[2 * m + 1] = 0;
}

void minmax_init(int* ws, int64_t maps, cudaStream_t s) {
  minmax_init_kernel<<<blocks_for(maps), kThreads, 0, s>>>(ws, maps);
  SEG_XAI_LAUNCH_CHECK();
}

// x: [M,n] float32, one thread per element.
__global__ void minmax_apply_kernel(float* x, const int* ws, int64_t n, int64_t total, float eps) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) x[i] = minmax_scale(x[i], ws, i / n, eps);
}

void minmax_apply_inplace(float* x, const int* ws, int64_t maps, int64_t n, float eps,
                          cudaStream_t s) {
  minmax_apply_kernel<<<blocks_for(maps * n), kThreads, 0, s>>>(x, ws, n, maps * n, eps);
  SEG_XAI_LAUNCH_CHECK();
}

}  // namespace seg_xai::cuda
