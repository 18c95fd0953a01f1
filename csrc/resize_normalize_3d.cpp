#include "dispatch.h"

namespace seg_xai {

void resize_normalize_3d(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                         float eps, const Exec& exec) {
  constexpr const char* op = "resize_normalize_3d";
  check_same_device(op, {{"maps", &maps}, {"out", &out}, {"minmax", &minmax}});
  check_layout(op, {{{"maps", &maps}, 4}, {{"out", &out}, 4}, {{"minmax", &minmax}, 2}});
  check_float(op, "maps", maps);
  check_dtype(op, "out", out, {DType::Float32});
  check_dtype(op, "minmax", minmax, {DType::Int32});
  check_dim(op, "out", out, 0, maps.shape[0], "number of maps");
  check_dim(op, "minmax", minmax, 0, maps.shape[0], "number of maps");
  check_dim(op, "minmax", minmax, 1, 2, "min and max");
  if (maps.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::resize_normalize_3d_cuda(maps, out, minmax, eps, exec));
  else
    cpu::resize_normalize_3d_cpu(maps, out, eps, exec);
}

}  // namespace seg_xai
