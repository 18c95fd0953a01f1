#include "dispatch.h"

namespace seg_xai {

void normalize_maps(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                    float eps, const Exec& exec) {
  constexpr const char* op = "normalize_maps";
  check_same_device(op, {{"maps", &maps}, {"out", &out}, {"minmax", &minmax}});
  check_layout(op, {{{"maps", &maps}, 3}, {{"out", &out}, 3}, {{"minmax", &minmax}, 2}});
  check_float(op, "maps", maps);
  check_dtype(op, "out", out, {DType::Float32, DType::Float16});
  check_dtype(op, "minmax", minmax, {DType::Int32});
  for (int d = 0; d < 3; ++d) check_dim(op, "out", out, d, maps.shape[d], "as maps");
  check_dim(op, "minmax", minmax, 0, maps.shape[0], "number of maps");
  check_dim(op, "minmax", minmax, 1, 2, "min and max");
  if (maps.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::normalize_maps_cuda(maps, out, minmax, eps, exec));
  else
    cpu::normalize_maps_cpu(maps, out, eps, exec);
}

}  // namespace seg_xai
