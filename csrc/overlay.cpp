#include "dispatch.h"

namespace seg_xai {

void overlay(const TensorView& images, const TensorView& maps, const TensorView& lut, double alpha,
             const TensorView& out, const Exec& exec) {
  constexpr const char* op = "overlay";
  check_same_device(op, {{"images", &images}, {"maps", &maps}, {"lut", &lut}, {"out", &out}});
  check_layout(op, {{{"images", &images}, 4}, {{"maps", &maps}, 3}, {{"lut", &lut}, 2},
                    {{"out", &out}, 4}});
  check_dtype(op, "images", images, {DType::UInt8});
  check_float(op, "maps", maps);
  check_dtype(op, "lut", lut, {DType::UInt8});
  check_dtype(op, "out", out, {DType::UInt8});
  check_dim(op, "images", images, 3, 3, "RGB");
  check_dim(op, "maps", maps, 0, images.shape[0], "B, as images");
  check_dim(op, "lut", lut, 0, 256, "entries");
  check_dim(op, "lut", lut, 1, 3, "RGB");
  for (int d = 0; d < 4; ++d) check_dim(op, "out", out, d, images.shape[d], "as images");
  if (images.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::overlay_cuda(images, maps, lut, alpha, out, exec));
  else
    cpu::overlay_cpu(images, maps, lut, alpha, out, exec);
}

}  // namespace seg_xai
