#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// One thread per (class i, element r), coalesced over r: s = Σ_g f(w_g·m_g[r]·grads[i,g,r]) and
// q = Σ_g f(·)², added to total[rows[i], r] (rows distinct: no two threads write one element).
// Grid (element blocks, n).
template <bool kMult, bool kAbs, bool kSq>
__global__ void accumulate_kernel(const float* grads, const float* w, const float* mult, const int64_t* rows,
                                  float* total, float* total_sq, int64_t G, int64_t R) {
  const int64_t i = blockIdx.y;
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const float* g = grads + i * G * R + r;
  float s = 0.f, q = 0.f;
  for (int64_t j = 0; j < G; ++j) {
    float a = w[j] * g[j * R];
    if (kMult) a *= mult[j * R + r];
    if (kAbs) a = fabsf(a);
    s += a;
    if (kSq) q += a * a;
  }
  const int64_t at = rows[i] * R + r;
  total[at] += s;
  if (kSq) total_sq[at] += q;
}

template <bool kMult, bool kAbs, bool kSq>
void launch_accumulate(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                       const TensorView& rows, const TensorView& total, const TensorView& total_sq,
                       cudaStream_t st) {
  const int64_t n = grads.shape[0], G = grads.shape[1], R = grads.shape[2];
  const dim3 grid(blocks_for(R), unsigned(n));
  accumulate_kernel<kMult, kAbs, kSq><<<grid, kThreads, 0, st>>>(
      grads.ptr<float>(), weights.ptr<float>(), kMult ? mult.ptr<float>() : nullptr, rows.ptr<int64_t>(),
      total.ptr<float>(), kSq ? total_sq.ptr<float>() : nullptr, G, R);
  SEG_XAI_LAUNCH_CHECK();
}

void attribution_accumulate_cuda(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                                 bool use_mult, const TensorView& rows, const TensorView& total,
                                 const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec) {
  DeviceGuard guard(grads);
  const cudaStream_t st = stream_of(exec);
  const int key = (use_mult ? 4 : 0) | (abs ? 2 : 0) | (use_sq ? 1 : 0);
  switch (key) {
    case 0: launch_accumulate<false, false, false>(grads, weights, mult, rows, total, total_sq, st); break;
    case 1: launch_accumulate<false, false, true>(grads, weights, mult, rows, total, total_sq, st); break;
    case 2: launch_accumulate<false, true, false>(grads, weights, mult, rows, total, total_sq, st); break;
    case 3: launch_accumulate<false, true, true>(grads, weights, mult, rows, total, total_sq, st); break;
    case 4: launch_accumulate<true, false, false>(grads, weights, mult, rows, total, total_sq, st); break;
    case 5: launch_accumulate<true, false, true>(grads, weights, mult, rows, total, total_sq, st); break;
    case 6: launch_accumulate<true, true, false>(grads, weights, mult, rows, total, total_sq, st); break;
    default: launch_accumulate<true, true, true>(grads, weights, mult, rows, total, total_sq, st); break;
  }
}

// out[m,p] = Σ_c attributions[m,c,p]; one thread per (map, position), coalesced over p; the
// min/max of relu(out) folded into ws for the normalisation. Grid (position blocks, M).
template <typename T>
__global__ void channel_sum_kernel(const T* attr, float* out, int* ws, int64_t C, int64_t N) {
  const int64_t m = blockIdx.y;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < N;
  float acc = 0.f;
  if (active) {
    for (int64_t c = 0; c < C; ++c) acc += to_float(attr[(m * C + c) * N + p]);
    out[m * N + p] = acc;
  }
  if (ws != nullptr) {
    const float v = relu0(acc);
    warp_minmax_atomic(active ? v : INFINITY, active ? v : 0.f, ws + 2 * m);
  }
}

void attribution_maps_cuda(const TensorView& attributions, const TensorView& out, bool normalize,
                           const TensorView& minmax, float eps, const Exec& exec) {
  DeviceGuard guard(attributions);
  const cudaStream_t st = stream_of(exec);
  const int64_t M = attributions.shape[0] * attributions.shape[1];
  const int64_t C = attributions.shape[2], N = attributions.shape[3];
  int* ws = normalize ? minmax.ptr<int>() : nullptr;
  if (normalize) minmax_init(ws, M, st);
  dispatch_float(attributions.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const dim3 grid(blocks_for(N), unsigned(M));
    channel_sum_kernel<T><<<grid, kThreads, 0, st>>>(attributions.ptr<T>(), out.ptr<float>(), ws, C, N);
    SEG_XAI_LAUNCH_CHECK();
  });
  if (normalize) minmax_apply_inplace(out.ptr<float>(), ws, M, N, eps, st);
}

}  // namespace seg_xai::cuda
