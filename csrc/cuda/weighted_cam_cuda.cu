#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

constexpr int kClassTile = 8;    // classes accumulated per thread (registers)
constexpr int kChannelTile = 32;  // weights staged in shared memory per step
constexpr int kChannelChunk = 64;  // as the CPU kernel: chunk sums, then the chunks are added
static_assert(kChannelChunk % kChannelTile == 0, "a chunk is whole channel tiles");

// raw[b,k,p] = Σ_c W[b,k,c]·A[b,c,p] for kClassTile classes per thread, min/max fused.
// Channels are summed in chunks of kChannelChunk whose sums are then added, as on the CPU.
// Grid (position blocks, class tiles, B); each A element is read once per class tile.
// A: [B,C,n], W: [B,K,C] → out: float32 [B,K,n]; ws: int32 [B*K,2].
template <typename T>
__global__ void combine_kernel(const T* A, const float* W, float* out, int* ws, int64_t K,
                               int64_t C, int64_t n) {
  __shared__ float w_tile[kClassTile][kChannelTile];
  const int64_t b = blockIdx.z, k0 = int64_t(blockIdx.y) * kClassTile;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < n;
  float acc[kClassTile] = {}, part[kClassTile] = {};
  for (int64_t c0 = 0; c0 < C; c0 += kChannelTile) {
    for (int t = threadIdx.x; t < kClassTile * kChannelTile; t += blockDim.x) {
      const int64_t k = k0 + t / kChannelTile, c = c0 + t % kChannelTile;
      w_tile[t / kChannelTile][t % kChannelTile] = (k < K && c < C) ? W[(b * K + k) * C + c] : 0.f;
    }
    __syncthreads();
    const int64_t c_end = C - c0 < kChannelTile ? C - c0 : kChannelTile;
    if (active)
      for (int64_t j = 0; j < c_end; ++j) {
        const float a = to_float(A[(b * C + c0 + j) * n + p]);
#pragma unroll
        for (int kk = 0; kk < kClassTile; ++kk) part[kk] += w_tile[kk][j] * a;
      }
    if ((c0 + kChannelTile) % kChannelChunk == 0 || c0 + kChannelTile >= C) {
#pragma unroll
      for (int kk = 0; kk < kClassTile; ++kk) acc[kk] += part[kk], part[kk] = 0.f;
    }
    __syncthreads();
  }
#pragma unroll
  for (int kk = 0; kk < kClassTile; ++kk) {
    const int64_t k = k0 + kk;
    if (k >= K) break;  // block-uniform
    if (active) out[(b * K + k) * n + p] = acc[kk];
    const float v = relu0(acc[kk]);
    warp_minmax_atomic(active ? v : INFINITY, active ? v : 0.f, ws + 2 * (b * K + k));
  }
}

void weighted_cam_cuda(const TensorView& activations, const TensorView& weights,
                       const TensorView& out, const TensorView& minmax, float eps,
                       const Exec& exec) {
  DeviceGuard guard(activations);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = activations.shape[0], C = activations.shape[1], K = weights.shape[1];
  const int64_t n = activations.shape[2] * activations.shape[3];
  int* ws = minmax.ptr<int>();
  minmax_init(ws, B * K, st);
  dispatch_float(activations.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const dim3 grid(blocks_for(n), unsigned((K + kClassTile - 1) / kClassTile), unsigned(B));
    combine_kernel<<<grid, kThreads, 0, st>>>(activations.ptr<T>(), weights.ptr<float>(),
                                              out.ptr<float>(), ws, K, C, n);
    SEG_XAI_LAUNCH_CHECK();
  });
  minmax_apply_inplace(out.ptr<float>(), ws, B * K, n, eps, st);
}

}  // namespace seg_xai::cuda
