#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// raw[b,k,p] = Σ_c f(G[b,k,c,p], A[b,c,p]) with f = g·a (hirescam), relu(g)·a (layercam) or
// relu(g·a) (gradcam_elementwise); one thread per (b,k,p), coalesced over p; min/max fused.
// Grid (position blocks, B*K).
// A: [B,C,n], G: [B,K,C,n] → out: float32 [B,K,n]; ws: int32 [B*K,2].
template <typename T, int kProduct>  // 0 plain, 1 relu(g), 2 relu(g·a)
__global__ void elementwise_kernel(const T* A, const T* G, float* out, int* ws, int64_t K,
                                   int64_t C, int64_t n) {
  const int64_t m = blockIdx.y, b = m / K;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < n;
  float acc = 0.f;
  if (active)
    for (int64_t c = 0; c < C; ++c) {
      const float g = to_float(G[(m * C + c) * n + p]);
      const float a = to_float(A[(b * C + c) * n + p]);
      acc += kProduct == 1 ? relu0(g) * a : kProduct == 2 ? relu0(g * a) : g * a;
    }
  if (active) out[m * n + p] = acc;
  const float v = relu0(acc);
  warp_minmax_atomic(active ? v : INFINITY, active ? v : 0.f, ws + 2 * m);
}

void elementwise_cam_cuda(const TensorView& activations, const TensorView& gradients,
                          Method method, const TensorView& out, const TensorView& minmax,
                          float eps, const Exec& exec) {
  DeviceGuard guard(activations);
  const cudaStream_t st = stream_of(exec);
  const int64_t B = gradients.shape[0], K = gradients.shape[1], C = gradients.shape[2];
  const int64_t n = gradients.shape[3] * gradients.shape[4];
  int* ws = minmax.ptr<int>();
  minmax_init(ws, B * K, st);
  dispatch_float(activations.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const dim3 grid(blocks_for(n), unsigned(B * K));
    const T* A = activations.ptr<T>();
    const T* G = gradients.ptr<T>();
    if (method == Method::LayerCAM)
      elementwise_kernel<T, 1><<<grid, kThreads, 0, st>>>(A, G, out.ptr<float>(), ws, K, C, n);
    else if (method == Method::GradCAMElementWise)
      elementwise_kernel<T, 2><<<grid, kThreads, 0, st>>>(A, G, out.ptr<float>(), ws, K, C, n);
    else
      elementwise_kernel<T, 0><<<grid, kThreads, 0, st>>>(A, G, out.ptr<float>(), ws, K, C, n);
    SEG_XAI_LAUNCH_CHECK();
  });
  minmax_apply_inplace(out.ptr<float>(), ws, B * K, n, eps, st);
}

}  // namespace seg_xai::cuda
