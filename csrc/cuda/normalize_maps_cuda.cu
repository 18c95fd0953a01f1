#include "cuda_common.cuh"
#include "ops_cuda.h"

namespace seg_xai::cuda {

// Same kernels as resize_normalize with an identity resize (out has the maps' shape), so the
// two ops share one implementation; this file only keeps the op-per-file layout.
void normalize_maps_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                         float eps, const Exec& exec) {
  resize_normalize_cuda(maps, out, minmax, eps, exec);
}

}  // namespace seg_xai::cuda
