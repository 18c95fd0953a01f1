// The CUDA facts of build_info(): runtime version and devices visible now.
#include <cuda_runtime.h>

#include "ops_cuda.h"

namespace seg_xai::cuda {

int runtime_version_cuda() { return CUDART_VERSION; }

int device_count_cuda() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

}  // namespace seg_xai::cuda
