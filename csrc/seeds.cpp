#include "dispatch.h"

namespace seg_xai {

// out: float32 [B,K,h,w] with B from src.
static void check_seed_out(const char* op, const TensorView& src, int64_t K, const TensorView& out) {
  check_dtype(op, "out", out, {DType::Float32});
  check_dim(op, "out", out, 0, src.shape[0], "B");
  check_dim(op, "out", out, 1, K, "K");
}

void seeds_from_labels(const TensorView& labels, const TensorView& classes, bool align_corners,
                       const TensorView& out, const Exec& exec) {
  constexpr const char* op = "seeds_from_labels";
  check_same_device(op, {{"labels", &labels}, {"classes", &classes}, {"out", &out}});
  check_layout(op, {{{"labels", &labels}, 3}, {{"classes", &classes}, 1}, {{"out", &out}, 4}});
  check_dtype(op, "labels", labels, {DType::Int64});
  check_dtype(op, "classes", classes, {DType::Int64});
  check_seed_out(op, labels, classes.shape[0], out);
  if (labels.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::seeds_from_labels_cuda(labels, classes, align_corners, out, exec));
  else
    cpu::seeds_from_labels_cpu(labels, classes, align_corners, out, exec);
}

void seeds_from_masks(const TensorView& masks, bool align_corners, const TensorView& out,
                      const Exec& exec) {
  constexpr const char* op = "seeds_from_masks";
  check_same_device(op, {{"masks", &masks}, {"out", &out}});
  check_layout(op, {{{"masks", &masks}, 4}, {{"out", &out}, 4}});
  check_float(op, "masks", masks);
  check_seed_out(op, masks, masks.shape[1], out);
  if (masks.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::seeds_from_masks_cuda(masks, align_corners, out, exec));
  else
    cpu::seeds_from_masks_cpu(masks, align_corners, out, exec);
}

}  // namespace seg_xai
