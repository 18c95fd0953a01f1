#include <cmath>

#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {
namespace {

// Sum of v over the block (blockDim.x a multiple of 32, ≤ 1024); the result in every thread.
__device__ double block_sum(double v, double* shared) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int i = 0; i < warps; ++i) total += shared[i];
  return total;
}

__device__ float block_min_max(float v, bool is_max, float* shared) {
  for (int off = 16; off > 0; off /= 2) {
    const float u = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, u) : fminf(v, u);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = shared[0];
  for (int i = 1; i < warps; ++i) r = is_max ? fmaxf(r, shared[i]) : fminf(r, shared[i]);
  return r;
}

// One block per (n, k): three sums over the pixels (which depend on the score type).
__global__ void region_scores_kernel(const float* X, const float* M, const int64_t* cls,
                                     const int64_t* ref, float* S, int64_t L, int64_t HW,
                                     int64_t K, int score) {
  __shared__ double shared[32];
  const int64_t n = blockIdx.x / K, k = blockIdx.x % K, c = cls[k];
  const float* x = X + n * L * HW;
  const float* m = M + k * HW;
  double a = 0.0, b = 0.0, d = 0.0;
  for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
    const double w = m[p];
    if (score == 0) {
      a += w * x[c * HW + p];
    } else if (score == 1) {
      float hi = x[p];
      for (int64_t l = 1; l < L; ++l) hi = fmaxf(hi, x[l * HW + p]);
      double total = 0.0;
      for (int64_t l = 0; l < L; ++l) total += exp(double(x[l * HW + p]) - hi);
      a += w * exp(double(x[c * HW + p]) - hi) / total;
      b += w;
    } else {
      int64_t label = 0;
      float v = x[p];
      for (int64_t l = 1; l < L && !isnan(v); ++l) {
        const float u = x[l * HW + p];
        if (u > v || isnan(u)) v = u, label = l;
      }
      const bool P = label == c, O = ref[p] == c;
      a += P && O ? w : 0.0, b += P ? w : 0.0, d += O ? w : 0.0;
    }
  }
  a = block_sum(a, shared);
  b = block_sum(b, shared);
  d = block_sum(d, shared);
  if (threadIdx.x != 0) return;
  if (score == 0) S[blockIdx.x] = float(a);
  else if (score == 1) S[blockIdx.x] = b > 0 ? float(a / b) : 0.f;
  else S[blockIdx.x] = b + d > 0 ? float(2.0 * a / (b + d)) : 1.f;
}

__device__ __forceinline__ float upsample_at(const float* a, int64_t h, int64_t w, float sy, float sx,
                                             int64_t y, int64_t x, bool align) {
  const AxisTap ty = axis_tap(y, h, sy, align), tx = axis_tap(x, w, sx, align);
  const float top = a[ty.i0 * w + tx.i0] * tx.l0 + a[ty.i0 * w + tx.i1] * tx.l1;
  const float bot = a[ty.i1 * w + tx.i0] * tx.l0 + a[ty.i1 * w + tx.i1] * tx.l1;
  return top * ty.l0 + bot * ty.l1;
}

// One block per channel: min-max of its upsample, then the three products (recomputed).
__global__ void scorecam_kernel(const float* img, const float* A, float* out, int64_t h, int64_t w,
                                int64_t H, int64_t W, float sy, float sx, float eps) {
  __shared__ float shared[32];
  const float* a = A + blockIdx.x * h * w;
  const int64_t HW = H * W;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
    const float v = upsample_at(a, h, w, sy, sx, p / W, p % W, true);
    lo = fminf(lo, v), hi = fmaxf(hi, v);
  }
  lo = block_min_max(lo, false, shared);
  hi = block_min_max(hi, true, shared);
  const float range = (hi - lo) + eps;
  float* o = out + blockIdx.x * 3 * HW;
  for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
    const float m = (upsample_at(a, h, w, sy, sx, p / W, p % W, true) - lo) / range;
    for (int c = 0; c < 3; ++c) o[c * HW + p] = img[c * HW + p] * m;
  }
}

// RISE mask i at (y, x): grid i (s×s) upsampled to (UH, UW), read at (y + dy, x + dx).
__device__ __forceinline__ float rise_mask(const float* grids, const int64_t* shifts, int64_t i,
                                           int64_t s, float sy, float sx, int64_t y, int64_t x) {
  return upsample_at(grids + i * s * s, s, s, sy, sx, y + shifts[2 * i], x + shifts[2 * i + 1], false);
}

__global__ void rise_inputs_kernel(const float* img, const float* grids, const int64_t* shifts,
                                   float* out, int64_t s, int64_t H, int64_t W, float sy, float sx,
                                   int64_t total) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = i*H*W + p
  if (t >= total) return;
  const int64_t HW = H * W, i = t / HW, p = t % HW;
  const float m = rise_mask(grids, shifts, i, s, sy, sx, p / W, p % W);
  for (int c = 0; c < 3; ++c) out[(i * 3 + c) * HW + p] = img[c * HW + p] * m;
}

// One thread per (k, pixel), looping over the N masks.
__global__ void rise_accumulate_kernel(const float* scores, const float* grids,
                                       const int64_t* shifts, float* out, int64_t N, int64_t K,
                                       int64_t s, int64_t H, int64_t W, float sy, float sx) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = k*H*W + p
  if (t >= K * H * W) return;
  const int64_t k = t / (H * W), p = t % (H * W);
  float acc = 0.f;
  for (int64_t i = 0; i < N; ++i)
    acc += scores[i * K + k] * rise_mask(grids, shifts, i, s, sy, sx, p / W, p % W);
  out[t] = acc;
}

// One thread per (coalition i, pixel p), the three channels in turn.
__global__ void segment_inputs_kernel(const float* img, const float* base, const int64_t* seg,
                                      const uint8_t* keep, float* out, int64_t M, int64_t HW,
                                      int64_t total) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = i*HW + p
  if (t >= total) return;
  const int64_t i = t / HW, p = t % HW;
  const bool kept = keep[i * M + seg[p]] != 0;
  for (int c = 0; c < 3; ++c) out[(i * 3 + c) * HW + p] = kept ? img[c * HW + p] : base[c * HW + p];
}

// (sy, sx) of RISE's upsample from s to (s+1)·ceil(n/s) per axis.
inline float rise_scale(int64_t s, int64_t n) { return axis_scale(s, (s + 1) * ((n + s - 1) / s), false); }

}  // namespace

void region_scores_cuda(const TensorView& logits, const TensorView& masks,
                        const TensorView& classes, Score score,
                        const TensorView& reference_labels, const TensorView& out,
                        const Exec& exec) {
  DeviceGuard guard(logits);
  const int64_t N = logits.shape[0], K = masks.shape[0];
  region_scores_kernel<<<unsigned(N * K), kThreads, 0, stream_of(exec)>>>(
      logits.ptr<float>(), masks.ptr<float>(), classes.ptr<int64_t>(),
      reference_labels.ptr<int64_t>(), out.ptr<float>(), logits.shape[1],
      logits.shape[2] * logits.shape[3], K, int(score));
  SEG_XAI_LAUNCH_CHECK();
}

void scorecam_inputs_cuda(const TensorView& image, const TensorView& activations, float eps,
                          const TensorView& out, const Exec& exec) {
  DeviceGuard guard(image);
  const int64_t h = activations.shape[1], w = activations.shape[2];
  const int64_t H = image.shape[1], W = image.shape[2];
  scorecam_kernel<<<unsigned(activations.shape[0]), kThreads, 0, stream_of(exec)>>>(
      image.ptr<float>(), activations.ptr<float>(), out.ptr<float>(), h, w, H, W,
      axis_scale(h, H, true), axis_scale(w, W, true), eps);
  SEG_XAI_LAUNCH_CHECK();
}

void rise_inputs_cuda(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                      const TensorView& out, const Exec& exec) {
  DeviceGuard guard(image);
  const int64_t N = grids.shape[0], s = grids.shape[1], H = image.shape[1], W = image.shape[2];
  rise_inputs_kernel<<<blocks_for(N * H * W), kThreads, 0, stream_of(exec)>>>(
      image.ptr<float>(), grids.ptr<float>(), shifts.ptr<int64_t>(), out.ptr<float>(), s, H, W,
      rise_scale(s, H), rise_scale(s, W), N * H * W);
  SEG_XAI_LAUNCH_CHECK();
}

void rise_accumulate_cuda(const TensorView& scores, const TensorView& grids,
                          const TensorView& shifts, const TensorView& out, const Exec& exec) {
  DeviceGuard guard(scores);
  const int64_t N = grids.shape[0], s = grids.shape[1], K = scores.shape[1];
  const int64_t H = out.shape[1], W = out.shape[2];
  rise_accumulate_kernel<<<blocks_for(K * H * W), kThreads, 0, stream_of(exec)>>>(
      scores.ptr<float>(), grids.ptr<float>(), shifts.ptr<int64_t>(), out.ptr<float>(), N, K, s,
      H, W, rise_scale(s, H), rise_scale(s, W));
  SEG_XAI_LAUNCH_CHECK();
}

void segment_inputs_cuda(const TensorView& image, const TensorView& baseline,
                         const TensorView& segments, const TensorView& keep, const TensorView& out,
                         const Exec& exec) {
  DeviceGuard guard(image);
  const int64_t n = keep.shape[0], HW = image.shape[1] * image.shape[2];
  segment_inputs_kernel<<<blocks_for(n * HW), kThreads, 0, stream_of(exec)>>>(
      image.ptr<float>(), baseline.ptr<float>(), segments.ptr<int64_t>(), keep.ptr<uint8_t>(),
      out.ptr<float>(), keep.shape[1], HW, n * HW);
  SEG_XAI_LAUNCH_CHECK();
}

}  // namespace seg_xai::cuda
