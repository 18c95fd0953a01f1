#include "dispatch.h"

namespace seg_xai {

void class_argmax(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                  const Exec& exec) {
  constexpr const char* op = "class_argmax";
  check_same_device(op, {{"logits", &logits}, {"labels", &labels}, {"counts", &counts}});
  check_layout(op, {{{"logits", &logits}, 4}, {{"labels", &labels}, 3}});
  check_float(op, "logits", logits);
  check_dtype(op, "labels", labels, {DType::Int64});
  check_dim(op, "labels", labels, 0, logits.shape[0], "B, as logits");
  check_dim(op, "labels", labels, 1, logits.shape[2], "H, as logits");
  check_dim(op, "labels", labels, 2, logits.shape[3], "W, as logits");
  if (use_counts) {
    check_layout(op, {{{"counts", &counts}, 2}});
    check_dtype(op, "counts", counts, {DType::Int64});
    check_dim(op, "counts", counts, 0, logits.shape[0], "B, as logits");
    check_dim(op, "counts", counts, 1, logits.shape[1], "L, as logits");
  }
  if (logits.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::class_argmax_cuda(logits, labels, counts, use_counts, exec));
  else
    cpu::class_argmax_cpu(logits, labels, counts, use_counts, exec);
}

}  // namespace seg_xai
