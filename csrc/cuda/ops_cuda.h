// CUDA implementations, called by the dispatchers in csrc/<op>.cpp after argument checks.
// Shapes as in seg_xai/ops.h. Kernels run on exec.stream; nothing is allocated here.
#pragma once

#include "seg_xai/ops.h"

namespace seg_xai::cuda {

void normalize_maps_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                         float eps, const Exec& exec);
void resize_normalize_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                           float eps, const Exec& exec);
void resize_normalize_3d_cuda(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                              float eps, const Exec& exec);
void channel_weights_cuda(const TensorView& activations, const TensorView& gradients,
                          Method method, const TensorView& out, const TensorView& channel_sums,
                          const Exec& exec);
void analytic_gradcampp_weights_cuda(const TensorView& activations_or_sums,
                                     const TensorView& weight, const TensorView& seeds,
                                     const TensorView& out, const TensorView& channel_sums,
                                     const Exec& exec);
void weighted_cam_cuda(const TensorView& activations, const TensorView& weights,
                       const TensorView& out, const TensorView& minmax, float eps,
                       const Exec& exec);
void elementwise_cam_cuda(const TensorView& activations, const TensorView& gradients,
                          Method method, const TensorView& out, const TensorView& minmax,
                          float eps, const Exec& exec);
void pooled_cam_cuda(const TensorView& activations, const TensorView& gradients, int64_t pool,
                     bool mean, const TensorView& out, const TensorView& minmax, float eps,
                     const Exec& exec);
void overlay_cuda(const TensorView& images, const TensorView& maps, const TensorView& lut,
                  double alpha, const TensorView& out, const Exec& exec);
void class_argmax_cuda(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                       const Exec& exec);
void seeds_from_labels_cuda(const TensorView& labels, const TensorView& classes,
                            bool align_corners, const TensorView& out, const Exec& exec);
void seeds_from_masks_cuda(const TensorView& masks, bool align_corners, const TensorView& out,
                           const Exec& exec);

void region_scores_cuda(const TensorView& logits, const TensorView& masks,
                        const TensorView& classes, Score score,
                        const TensorView& reference_labels, const TensorView& out,
                        const Exec& exec);
void scorecam_inputs_cuda(const TensorView& image, const TensorView& activations, float eps,
                          const TensorView& out, const Exec& exec);
void rise_inputs_cuda(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                      const TensorView& out, const Exec& exec);
void rise_accumulate_cuda(const TensorView& scores, const TensorView& grids,
                          const TensorView& shifts, const TensorView& out, const Exec& exec);
void segment_inputs_cuda(const TensorView& image, const TensorView& baseline,
                         const TensorView& segments, const TensorView& keep, const TensorView& out,
                         const Exec& exec);

// build_info_cuda.cu
int runtime_version_cuda();  // CUDART_VERSION
int device_count_cuda();     // 0 without driver or device; never throws

void attribution_accumulate_cuda(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                                 bool use_mult, const TensorView& rows, const TensorView& total,
                                 const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec);
void attribution_maps_cuda(const TensorView& attributions, const TensorView& out, bool normalize,
                           const TensorView& minmax, float eps, const Exec& exec);

}  // namespace seg_xai::cuda
