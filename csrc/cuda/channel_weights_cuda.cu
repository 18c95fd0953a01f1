#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// S_c = Σ_u A_c(u): one warp per (b, c) row. A: [B*C, n] → sums: [B*C].
template <typename T>
__global__ void channel_sums_kernel(const T* A, float* sums, int64_t rows, int64_t n) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;  // warp-uniform
  float acc = 0.f;
  for (int64_t i = threadIdx.x % 32; i < n; i += 32) acc += to_float(A[row * n + i]);
  acc = warp_sum(acc);
  if (threadIdx.x % 32 == 0) sums[row] = acc;
}

// One warp per (b, k, c) gradient row: G is read once, coalesced. G: [B,K,C,n] → out: [B,K,C].
template <typename T>
__global__ void weights_kernel(const T* A, const T* G, const float* sums, float* out, Method method,
                               int64_t K, int64_t C, int64_t n, int64_t rows) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;  // = (b*K + k)*C + c
  if (row >= rows) return;
  const int64_t c = row % C, b = row / (K * C);
  const T* g = G + row * n;
  const T* a = A + (b * C + c) * n;
  const float s = method == Method::GradCAM ? 0.f : sums[b * C + c];
  float acc = 0.f;
  for (int64_t i = threadIdx.x % 32; i < n; i += 32) {
    const float gi = to_float(g[i]);
    if (method == Method::GradCAM) {
      acc += gi;
    } else if (method == Method::GradCAMPlusPlus) {
      const float g2 = gi * gi, g3 = g2 * gi;
      const float alpha = gi != 0.f ? g2 / (2.f * g2 + s * g3 + kGradCamPPEps) : 0.f;
      acc += relu0(gi) * alpha;
    } else {
      acc += gi * to_float(a[i]);
    }
  }
  acc = warp_sum(acc);
  if (threadIdx.x % 32 == 0)
    out[row] = method == Method::GradCAM ? acc / float(n)
             : method == Method::XGradCAM ? acc / (s + kXGradCamEps)
                                          : acc;
}

void channel_weights_cuda(const TensorView& activations, const TensorView& gradients,
                          Method method, const TensorView& out, const TensorView& channel_sums,
                          const Exec& exec) {
  DeviceGuard guard(activations);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t n = gradients.shape[3] * gradients.shape[4];
  dispatch_float(activations.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (method != Method::GradCAM) {
      channel_sums_kernel<<<blocks_for(B * C, kWarps), kThreads, 0, st>>>(
          activations.ptr<T>(), channel_sums.ptr<float>(), B * C, n);
      SEG_XAI_LAUNCH_CHECK();
    }
    weights_kernel<<<blocks_for(B * K * C, kWarps), kThreads, 0, st>>>(
        activations.ptr<T>(), gradients.ptr<T>(), channel_sums.ptr<float>(), out.ptr<float>(),
        method, K, C, n, B * K * C);
    SEG_XAI_LAUNCH_CHECK();
  });
}

// Linear-head Grad-CAM++: one warp per (b, k, c) row with g = W_kc·R_k(u) formed on the fly
// (R_k is re-read per channel from L2). S: [B,C], Wk: [K,C], R: [B,K,n] → out: [B,K,C].
__global__ void analytic_gradcampp_kernel(const float* S, const float* Wk, const float* R,
                                          float* out, int64_t K, int64_t C, int64_t n,
                                          int64_t rows) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;  // = (b*K + k)*C + c
  if (row >= rows) return;
  const int64_t bk = row / C, c = row % C, b = bk / K, k = bk % K;
  const float wk = Wk[k * C + c], s = S[b * C + c];
  const float* r = R + bk * n;
  float acc = 0.f;
  for (int64_t i = threadIdx.x % 32; i < n; i += 32) {
    const float gi = __fmul_rn(wk, r[i]), g2 = gi * gi, g3 = g2 * gi;
    const float alpha = gi != 0.f ? g2 / (2.f * g2 + s * g3 + kGradCamPPEps) : 0.f;
    acc += relu0(gi) * alpha;
  }
  acc = warp_sum(acc);
  if (threadIdx.x % 32 == 0) out[row] = acc;
}

void analytic_gradcampp_weights_cuda(const TensorView& activations_or_sums,
                                     const TensorView& weight, const TensorView& seeds,
                                     const TensorView& out, const TensorView& channel_sums,
                                     const Exec& exec) {
  DeviceGuard guard(seeds);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = seeds.shape[0], K = seeds.shape[1], C = weight.shape[1];
  const int64_t n = seeds.shape[2] * seeds.shape[3];
  const float* S = activations_or_sums.ptr<float>();
  if (activations_or_sums.ndim == 4) {
    const int64_t na = activations_or_sums.shape[2] * activations_or_sums.shape[3];
    channel_sums_kernel<<<blocks_for(B * C, kWarps), kThreads, 0, st>>>(
        activations_or_sums.ptr<float>(), channel_sums.ptr<float>(), B * C, na);
    SEG_XAI_LAUNCH_CHECK();
    S = channel_sums.ptr<float>();
  }
  analytic_gradcampp_kernel<<<blocks_for(B * K * C, kWarps), kThreads, 0, st>>>(
      S, weight.ptr<float>(), seeds.ptr<float>(), out.ptr<float>(), K, C, n, B * K * C);
  SEG_XAI_LAUNCH_CHECK();
}

}  // namespace seg_xai::cuda
