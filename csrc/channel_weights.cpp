#include "dispatch.h"

namespace seg_xai {

void channel_weights(const TensorView& activations, const TensorView& gradients, Method method,
                     const TensorView& out, const TensorView& channel_sums, const Exec& exec) {
  constexpr const char* op = "channel_weights";
  if (!is_weighted(method))
    fail(op, "argument 'method' must be gradcam, gradcam++ or xgradcam");
  check_same_device(op, {{"activations", &activations}, {"gradients", &gradients},
                         {"out", &out}, {"channel_sums", &channel_sums}});
  check_layout(op, {{{"activations", &activations}, 4}, {{"gradients", &gradients}, 5},
                    {{"out", &out}, 3}, {{"channel_sums", &channel_sums}, 2}});
  check_float(op, "activations", activations);
  check_dtype(op, "gradients", gradients, {activations.dtype});
  check_dtype(op, "out", out, {DType::Float32});
  check_dtype(op, "channel_sums", channel_sums, {DType::Float32});
  const TensorView& A = activations;
  check_dim(op, "gradients", gradients, 0, A.shape[0], "B, as activations");
  check_dim(op, "gradients", gradients, 2, A.shape[1], "C, as activations");
  check_dim(op, "gradients", gradients, 3, A.shape[2], "h, as activations");
  check_dim(op, "gradients", gradients, 4, A.shape[3], "w, as activations");
  check_dim(op, "out", out, 0, A.shape[0], "B");
  check_dim(op, "out", out, 1, gradients.shape[1], "K");
  check_dim(op, "out", out, 2, A.shape[1], "C");
  check_dim(op, "channel_sums", channel_sums, 0, A.shape[0], "B");
  check_dim(op, "channel_sums", channel_sums, 1, A.shape[1], "C");
  if (A.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::channel_weights_cuda(A, gradients, method, out, channel_sums, exec));
  else
    cpu::channel_weights_cpu(A, gradients, method, out, channel_sums, exec);
}

}  // namespace seg_xai
