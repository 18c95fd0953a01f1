// The perturbation family (Score-CAM, Ablation-CAM, RISE, occlusion, segment attributions): region
// scores of every class on a batch of perturbed outputs, the perturbed inputs, and RISE's
// accumulation.
#include "dispatch.h"

namespace seg_xai {

Score parse_score(const char* op, const std::string& name) {
  if (name == "logit") return Score::Logit;
  if (name == "probability") return Score::Probability;
  if (name == "dice") return Score::Dice;
  fail(op, "argument 'score' must be 'logit', 'probability' or 'dice', got '", name, "'");
}

// float32 on either device (the perturbation ops have no half-precision kernels).
static void check_f32(const char* op, const char* arg, const TensorView& t) {
  check_dtype(op, arg, t, {DType::Float32});
}

void region_scores(const TensorView& logits, const TensorView& masks, const TensorView& classes,
                   Score score, const TensorView& reference_labels, const TensorView& out,
                   const Exec& exec) {
  constexpr const char* op = "region_scores";
  check_same_device(op, {{"logits", &logits}, {"masks", &masks}, {"classes", &classes},
                         {"reference_labels", &reference_labels}, {"out", &out}});
  check_layout(op, {{{"logits", &logits}, 4}, {{"masks", &masks}, 3}, {{"classes", &classes}, 1},
                    {{"reference_labels", &reference_labels}, 2}, {{"out", &out}, 2}});
  check_f32(op, "logits", logits);
  check_f32(op, "masks", masks);
  check_f32(op, "out", out);
  check_dtype(op, "classes", classes, {DType::Int64});
  check_dtype(op, "reference_labels", reference_labels, {DType::Int64});
  const int64_t K = masks.shape[0];
  check_dim(op, "masks", masks, 1, logits.shape[2], "h, as logits");
  check_dim(op, "masks", masks, 2, logits.shape[3], "w, as logits");
  check_dim(op, "classes", classes, 0, K, "K, as masks");
  check_dim(op, "out", out, 0, logits.shape[0], "N, as logits");
  check_dim(op, "out", out, 1, K, "K, as masks");
  if (score == Score::Dice) {
    check_dim(op, "reference_labels", reference_labels, 0, logits.shape[2], "h, as logits");
    check_dim(op, "reference_labels", reference_labels, 1, logits.shape[3], "w, as logits");
  }
  if (logits.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::region_scores_cuda(logits, masks, classes, score, reference_labels,
                                                   out, exec));
  else
    cpu::region_scores_cpu(logits, masks, classes, score, reference_labels, out, exec);
}

void scorecam_inputs(const TensorView& image, const TensorView& activations, float eps,
                     const TensorView& out, const Exec& exec) {
  constexpr const char* op = "scorecam_inputs";
  check_same_device(op, {{"image", &image}, {"activations", &activations}, {"out", &out}});
  check_layout(op, {{{"image", &image}, 3}, {{"activations", &activations}, 3}, {{"out", &out}, 4}});
  check_f32(op, "image", image);
  check_f32(op, "activations", activations);
  check_f32(op, "out", out);
  check_dim(op, "out", out, 0, activations.shape[0], "n, as activations");
  for (int d = 0; d < 3; ++d) check_dim(op, "out", out, d + 1, image.shape[d], "as image");
  if (image.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::scorecam_inputs_cuda(image, activations, eps, out, exec));
  else
    cpu::scorecam_inputs_cpu(image, activations, eps, out, exec);
}

// grids: [N,s,s] (s ≥ 2), shifts: int64 [N,2]; the shift range is checked by the Python wrapper.
static void check_rise(const char* op, const TensorView& grids, const TensorView& shifts) {
  check_layout(op, {{{"grids", &grids}, 3}, {{"shifts", &shifts}, 2}});
  check_f32(op, "grids", grids);
  check_dtype(op, "shifts", shifts, {DType::Int64});
  check_dim(op, "grids", grids, 2, grids.shape[1], "s, a square grid");
  if (grids.shape[1] < 2) fail(op, "argument 'grids' must be [N,s,s] with s >= 2");
  check_dim(op, "shifts", shifts, 0, grids.shape[0], "N, as grids");
  check_dim(op, "shifts", shifts, 1, 2, "(dy, dx)");
}

void rise_inputs(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                 const TensorView& out, const Exec& exec) {
  constexpr const char* op = "rise_inputs";
  check_same_device(op, {{"image", &image}, {"grids", &grids}, {"shifts", &shifts}, {"out", &out}});
  check_layout(op, {{{"image", &image}, 3}, {{"out", &out}, 4}});
  check_rise(op, grids, shifts);
  check_f32(op, "image", image);
  check_f32(op, "out", out);
  check_dim(op, "out", out, 0, grids.shape[0], "N, as grids");
  for (int d = 0; d < 3; ++d) check_dim(op, "out", out, d + 1, image.shape[d], "as image");
  if (image.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::rise_inputs_cuda(image, grids, shifts, out, exec));
  else
    cpu::rise_inputs_cpu(image, grids, shifts, out, exec);
}

void rise_accumulate(const TensorView& scores, const TensorView& grids, const TensorView& shifts,
                     const TensorView& out, const Exec& exec) {
  constexpr const char* op = "rise_accumulate";
  check_same_device(op, {{"scores", &scores}, {"grids", &grids}, {"shifts", &shifts}, {"out", &out}});
  check_layout(op, {{{"scores", &scores}, 2}, {{"out", &out}, 3}});
  check_rise(op, grids, shifts);
  check_f32(op, "scores", scores);
  check_f32(op, "out", out);
  check_dim(op, "scores", scores, 0, grids.shape[0], "N, as grids");
  check_dim(op, "out", out, 0, scores.shape[1], "K, as scores");
  if (scores.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::rise_accumulate_cuda(scores, grids, shifts, out, exec));
  else
    cpu::rise_accumulate_cpu(scores, grids, shifts, out, exec);
}

void segment_inputs(const TensorView& image, const TensorView& baseline, const TensorView& segments,
                    const TensorView& keep, const TensorView& out, const Exec& exec) {
  constexpr const char* op = "segment_inputs";
  check_same_device(op, {{"image", &image}, {"baseline", &baseline}, {"segments", &segments},
                         {"keep", &keep}, {"out", &out}});
  check_layout(op, {{{"image", &image}, 3}, {{"baseline", &baseline}, 3}, {{"segments", &segments}, 2},
                    {{"keep", &keep}, 2}, {{"out", &out}, 4}});
  check_f32(op, "image", image);
  check_f32(op, "baseline", baseline);
  check_f32(op, "out", out);
  check_dtype(op, "segments", segments, {DType::Int64});
  check_dtype(op, "keep", keep, {DType::UInt8});
  for (int d = 0; d < 3; ++d) check_dim(op, "baseline", baseline, d, image.shape[d], "as image");
  check_dim(op, "segments", segments, 0, image.shape[1], "H, as image");
  check_dim(op, "segments", segments, 1, image.shape[2], "W, as image");
  check_dim(op, "out", out, 0, keep.shape[0], "n, as keep");
  for (int d = 0; d < 3; ++d) check_dim(op, "out", out, d + 1, image.shape[d], "as image");
  if (image.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::segment_inputs_cuda(image, baseline, segments, keep, out, exec));
  else
    cpu::segment_inputs_cpu(image, baseline, segments, keep, out, exec);
}

}  // namespace seg_xai
