// Helpers shared by the CUDA kernels: torch-free error checks, device guard, dtype dispatch,
// float conversion, and the per-map min-max reduction used by every normalising op.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "seg_xai/bilinear.h"
#include "seg_xai/tensor_view.h"

// Throws std::runtime_error (RuntimeError in Python) naming the call, file and line.
#define SEG_XAI_CUDA_CHECK(expr)                                                          \
  do {                                                                                    \
    const cudaError_t err_ = (expr);                                                      \
    if (err_ != cudaSuccess)                                                              \
      throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err_) +   \
                               " (" #expr " at " __FILE__ ":" + std::to_string(__LINE__) + ")"); \
  } while (0)

// After every kernel launch.
#define SEG_XAI_LAUNCH_CHECK() SEG_XAI_CUDA_CHECK(cudaGetLastError())

namespace seg_xai::cuda {

inline cudaStream_t stream_of(const Exec& exec) { return static_cast<cudaStream_t>(exec.stream); }

// Makes the tensors' device current for the op's lifetime, then restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(const TensorView& t) {
    SEG_XAI_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != t.device_index) SEG_XAI_CUDA_CHECK(cudaSetDevice(t.device_index));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with T the C++ type of a float dtype (float, __half, __nv_bfloat16).
template <typename F>
void dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(Tag<float>{}); break;
    case DType::Float16: f(Tag<__half>{}); break;
    case DType::BFloat16: f(Tag<__nv_bfloat16>{}); break;
    default: throw std::runtime_error("seg_xai: unsupported float dtype");
  }
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// relu with a canonical +0, so non-negative floats order like their int32 bit patterns.
__device__ __forceinline__ float relu0(float x) { return x > 0.f ? x : 0.f; }

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return unsigned((n + threads - 1) / threads);
}

// ---- per-map min-max in an int32 [M,2] workspace: (lo, hi) of relu(x) as float bit patterns.

// Sets every map's (lo, hi) to (+inf, 0).
void minmax_init(int* ws, int64_t maps, cudaStream_t s);

// Folds v (already relu0'd; pass lo=+inf, hi=0 from idle lanes) into ws[2m], ws[2m+1].
// Every lane of the warp must call it.
__device__ __forceinline__ void warp_minmax_atomic(float lo, float hi, int* ws_m) {
  for (int off = 16; off > 0; off /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  if ((threadIdx.x & 31) == 0) {
    atomicMin(ws_m, __float_as_int(lo));
    atomicMax(ws_m + 1, __float_as_int(hi));
  }
}

// (relu(x) − lo) / (hi − lo + eps) for map m.
__device__ __forceinline__ float minmax_scale(float x, const int* ws, int64_t m, float eps) {
  const float lo = __int_as_float(ws[2 * m]), hi = __int_as_float(ws[2 * m + 1]);
  return (relu0(x) - lo) / ((hi - lo) + eps);
}

// In-place normalisation of float32 maps x: [M,n] with the reduced workspace.
void minmax_apply_inplace(float* x, const int* ws, int64_t maps, int64_t n, float eps,
                          cudaStream_t s);

// Bilinear sample (align_corners=False) of map src: [h,w] at output pixel (y, x) of [H,W].
template <typename T>
__device__ __forceinline__ float bilinear(const T* src, int64_t h, int64_t w, float sy, float sx,
                                          int64_t y, int64_t x) {
  const AxisTap ty = axis_tap(y, h, sy, false), tx = axis_tap(x, w, sx, false);
  const float r0 = to_float(src[ty.i0 * w + tx.i0]) * tx.l0 + to_float(src[ty.i0 * w + tx.i1]) * tx.l1;
  const float r1 = to_float(src[ty.i1 * w + tx.i0]) * tx.l0 + to_float(src[ty.i1 * w + tx.i1]) * tx.l1;
  return r0 * ty.l0 + r1 * ty.l1;
}

}  // namespace seg_xai::cuda
