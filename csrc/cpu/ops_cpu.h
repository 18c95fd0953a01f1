// CPU implementations, called by the dispatchers in csrc/<op>.cpp after argument checks.
// Shapes as in seg_xai/ops.h; every float tensor is float32 here.
#pragma once

#include "seg_xai/ops.h"

namespace seg_xai::cpu {

void normalize_maps_cpu(const TensorView& maps, const TensorView& out, float eps, const Exec& exec);
void resize_normalize_cpu(const TensorView& maps, const TensorView& out, float eps,
                          const Exec& exec);
void resize_normalize_3d_cpu(const TensorView& maps, const TensorView& out, float eps,
                             const Exec& exec);
void channel_weights_cpu(const TensorView& activations, const TensorView& gradients, Method method,
                         const TensorView& out, const TensorView& channel_sums, const Exec& exec);
void analytic_gradcampp_weights_cpu(const TensorView& activations_or_sums,
                                     const TensorView& weight, const TensorView& seeds,
                                     const TensorView& out, const TensorView& channel_sums,
                                     const Exec& exec);
void weighted_cam_cpu(const TensorView& activations, const TensorView& weights,
                      const TensorView& out, float eps, const Exec& exec);
void elementwise_cam_cpu(const TensorView& activations, const TensorView& gradients,
                         Method method, const TensorView& out, float eps, const Exec& exec);
void pooled_cam_cpu(const TensorView& activations, const TensorView& gradients, int64_t pool,
                    bool mean, const TensorView& out, float eps, const Exec& exec);
void overlay_cpu(const TensorView& images, const TensorView& maps, const TensorView& lut,
                 double alpha, const TensorView& out, const Exec& exec);
void class_argmax_cpu(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                      const Exec& exec);
void seeds_from_labels_cpu(const TensorView& labels, const TensorView& classes, bool align_corners,
                           const TensorView& out, const Exec& exec);
void seeds_from_masks_cpu(const TensorView& masks, bool align_corners, const TensorView& out,
                          const Exec& exec);

void region_scores_cpu(const TensorView& logits, const TensorView& masks, const TensorView& classes,
                       Score score, const TensorView& reference_labels, const TensorView& out,
                       const Exec& exec);
void scorecam_inputs_cpu(const TensorView& image, const TensorView& activations, float eps,
                         const TensorView& out, const Exec& exec);
void rise_inputs_cpu(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                     const TensorView& out, const Exec& exec);
void rise_accumulate_cpu(const TensorView& scores, const TensorView& grids,
                         const TensorView& shifts, const TensorView& out, const Exec& exec);
void segment_inputs_cpu(const TensorView& image, const TensorView& baseline,
                        const TensorView& segments, const TensorView& keep, const TensorView& out,
                        const Exec& exec);

void attribution_accumulate_cpu(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                                bool use_mult, const TensorView& rows, const TensorView& total,
                                const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec);
void attribution_maps_cpu(const TensorView& attributions, const TensorView& out, bool normalize, float eps,
                          const Exec& exec);

}  // namespace seg_xai::cpu
