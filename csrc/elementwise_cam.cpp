#include "dispatch.h"

namespace seg_xai {

void elementwise_cam(const TensorView& activations, const TensorView& gradients, Method method,
                     const TensorView& out, const TensorView& minmax, float eps,
                     const Exec& exec) {
  constexpr const char* op = "elementwise_cam";
  if (is_weighted(method)) fail(op, "argument 'method' must be hirescam, layercam or gradcam_elementwise");
  const TensorView& A = activations;
  check_same_device(op, {{"activations", &A}, {"gradients", &gradients}, {"out", &out},
                         {"minmax", &minmax}});
  check_layout(op, {{{"activations", &A}, 4}, {{"gradients", &gradients}, 5}, {{"out", &out}, 4},
                    {{"minmax", &minmax}, 2}});
  check_float(op, "activations", A);
  check_dtype(op, "gradients", gradients, {A.dtype});
  check_dtype(op, "out", out, {DType::Float32});
  check_dtype(op, "minmax", minmax, {DType::Int32});
  const int64_t K = gradients.shape[1];
  check_dim(op, "gradients", gradients, 0, A.shape[0], "B, as activations");
  check_dim(op, "gradients", gradients, 2, A.shape[1], "C, as activations");
  check_dim(op, "gradients", gradients, 3, A.shape[2], "h, as activations");
  check_dim(op, "gradients", gradients, 4, A.shape[3], "w, as activations");
  check_dim(op, "out", out, 0, A.shape[0], "B");
  check_dim(op, "out", out, 1, K, "K");
  check_dim(op, "out", out, 2, A.shape[2], "h");
  check_dim(op, "out", out, 3, A.shape[3], "w");
  check_dim(op, "minmax", minmax, 0, A.shape[0] * K, "B*K maps");
  check_dim(op, "minmax", minmax, 1, 2, "min and max");
  if (A.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::elementwise_cam_cuda(A, gradients, method, out, minmax, eps, exec));
  else
    cpu::elementwise_cam_cpu(A, gradients, method, out, eps, exec);
}

}  // namespace seg_xai
