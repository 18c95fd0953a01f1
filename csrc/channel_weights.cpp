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

namespace seg_xai {

void analytic_gradcampp_weights(const TensorView& activations_or_sums, const TensorView& weight,
                                const TensorView& seeds, const TensorView& out,
                                const TensorView& channel_sums, const Exec& exec) {
  constexpr const char* op = "analytic_gradcampp_weights";
  const TensorView& A = activations_or_sums;
  check_same_device(op, {{"activations_or_sums", &A}, {"weight", &weight}, {"seeds", &seeds},
                         {"out", &out}, {"channel_sums", &channel_sums}});
  if (A.ndim != 2 && A.ndim != 4)
    fail(op, "argument 'activations_or_sums' must have 4 dimensions [B,C,h,w] (activations) or 2 "
             "[B,C] (channel sums), got ", A.ndim, " (shape ", shape_str(A), ")");
  check_layout(op, {{{"activations_or_sums", &A}, A.ndim}, {{"weight", &weight}, 2},
                    {{"seeds", &seeds}, 4}, {{"out", &out}, 3},
                    {{"channel_sums", &channel_sums}, 2}});
  for (const auto& [name, t] : {Named{"activations_or_sums", &A}, Named{"weight", &weight},
                                Named{"seeds", &seeds}, Named{"out", &out},
                                Named{"channel_sums", &channel_sums}})
    check_dtype(op, name, *t, {DType::Float32});
  const int64_t B = seeds.shape[0], K = seeds.shape[1], C = weight.shape[1];
  check_dim(op, "weight", weight, 0, K, "K, as seeds");
  check_dim(op, "activations_or_sums", A, 0, B, "B, as seeds");
  check_dim(op, "activations_or_sums", A, 1, C, "C, as weight");
  if (A.ndim == 4) {
    check_dim(op, "activations_or_sums", A, 2, seeds.shape[2], "h, as seeds");
    check_dim(op, "activations_or_sums", A, 3, seeds.shape[3], "w, as seeds");
  }
  check_dim(op, "out", out, 0, B, "B");
  check_dim(op, "out", out, 1, K, "K");
  check_dim(op, "out", out, 2, C, "C");
  check_dim(op, "channel_sums", channel_sums, 0, B, "B");
  check_dim(op, "channel_sums", channel_sums, 1, C, "C");
  if (A.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::analytic_gradcampp_weights_cuda(A, weight, seeds, out, channel_sums, exec));
  else
    cpu::analytic_gradcampp_weights_cpu(A, weight, seeds, out, channel_sums, exec);
}

}  // namespace seg_xai
