#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// One thread per output pixel. images/out: uint8 [B,H,W,3], maps: [B,h,w], lut: uint8 [256,3].
template <typename T>
__global__ void overlay_kernel(const uint8_t* images, const T* maps, const uint8_t* lut,
                               uint8_t* out, int64_t H, int64_t W, int64_t h, int64_t w,
                               float sy, float sx, float a_img, float a_heat, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // = (b*H + y)*W + x
  if (i >= total) return;
  const int64_t b = i / (H * W), y = (i / W) % H, x = i % W;
  const T* m = maps + b * h * w;
  const float v = (h == H && w == W) ? to_float(m[y * w + x]) : bilinear(m, h, w, sy, sx, y, x);
  const uint8_t* heat = lut + int(fminf(fmaxf(v, 0.f), 1.f) * 255.f) * 3;  // truncation
  for (int ch = 0; ch < 3; ++ch) {
    const float blend = __fadd_rn(__fmul_rn(a_img, float(images[i * 3 + ch])),
                                  __fmul_rn(a_heat, float(heat[ch])));  // no FMA: as the reference
    out[i * 3 + ch] = uint8_t(fminf(fmaxf(floorf(blend + 0.5f), 0.f), 255.f));
  }
}

void overlay_cuda(const TensorView& images, const TensorView& maps, const TensorView& lut,
                  double alpha, const TensorView& out, const Exec& exec) {
  DeviceGuard guard(images);
  const cudaStream_t st = stream_of(exec);
  const int64_t H = images.shape[1], W = images.shape[2], h = maps.shape[1], w = maps.shape[2];
  const int64_t total = images.shape[0] * H * W;
  dispatch_float(maps.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    overlay_kernel<<<blocks_for(total), kThreads, 0, st>>>(
        images.ptr<uint8_t>(), maps.ptr<T>(), lut.ptr<uint8_t>(), out.ptr<uint8_t>(), H, W, h, w,
        axis_scale(h, H, false), axis_scale(w, W, false), float(1.0 - alpha), float(alpha), total);
    SEG_XAI_LAUNCH_CHECK();
  });
}

}  // namespace seg_xai::cuda
