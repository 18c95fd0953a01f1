#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// raw[b,k,p] = Σ_c pool(G[b,k,c])[window of p]·A[b,c,p]: one thread per (b,k,p), coalesced over p.
// Each thread reduces its own window (pool² reads, shared with its neighbours through the cache):
// windows are small (the option is a few pixels), so a separate pooling pass would cost more in
// launches and memory than it saves. Min/max fused. Grid (position blocks, B*K).
// A: [B,C,h,w], G: [B,K,C,h,w] → out: float32 [B,K,h,w]; ws: int32 [B*K,2].
template <typename T, bool kMean>
__global__ void pooled_kernel(const T* A, const T* G, float* out, int* ws, int64_t K, int64_t C,
                              int64_t h, int64_t w, int64_t pool) {
  const int64_t m = blockIdx.y, b = m / K, n = h * w;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < n;
  float acc = 0.f;
  if (active) {
    const int64_t y0 = (p / w) / pool * pool, x0 = (p % w) / pool * pool;
    const int64_t y1 = min(h, y0 + pool), x1 = min(w, x0 + pool);
    const float count = float((y1 - y0) * (x1 - x0));
    for (int64_t c = 0; c < C; ++c) {
      const T* g = G + (m * C + c) * n;
      float v = kMean ? 0.f : to_float(g[y0 * w + x0]);
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) v = kMean ? v + to_float(g[y * w + x]) : fmaxf(v, to_float(g[y * w + x]));
      acc += (kMean ? v / count : v) * to_float(A[(b * C + c) * n + p]);
    }
    out[m * n + p] = acc;
  }
  const float v = relu0(acc);
  warp_minmax_atomic(active ? v : INFINITY, active ? v : 0.f, ws + 2 * m);
}

void pooled_cam_cuda(const TensorView& activations, const TensorView& gradients, int64_t pool,
                     bool mean, const TensorView& out, const TensorView& minmax, float eps,
                     const Exec& exec) {
  DeviceGuard guard(activations);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t h = gradients.shape[3], w = gradients.shape[4], n = h * w;
  int* ws = minmax.ptr<int>();
  minmax_init(ws, B * K, st);
  dispatch_float(activations.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const dim3 grid(blocks_for(n), unsigned(B * K));
    const T* A = activations.ptr<T>();
    const T* G = gradients.ptr<T>();
    if (mean)
      pooled_kernel<T, true><<<grid, kThreads, 0, st>>>(A, G, out.ptr<float>(), ws, K, C, h, w, pool);
    else
      pooled_kernel<T, false><<<grid, kThreads, 0, st>>>(A, G, out.ptr<float>(), ws, K, C, h, w, pool);
    SEG_XAI_LAUNCH_CHECK();
  });
  minmax_apply_inplace(out.ptr<float>(), ws, B * K, n, eps, st);
}

}  // namespace seg_xai::cuda
