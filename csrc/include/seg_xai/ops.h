// Every op of the core, device-independent. The ops live in files per op or op family: csrc/<f>.cpp
// (argument checks, then dispatch), csrc/cpu/<f>_cpu.cpp and csrc/cuda/<f>_cuda.cu, with <f> one of
// CMakeLists.txt's SEG_XAI_OPS. Three files hold several ops: channel_weights (channel_weights,
// analytic_gradcampp_weights), seeds (seeds_from_labels, seeds_from_masks) and perturbation
// (region_scores, scorecam_inputs, rise_inputs, rise_accumulate, segment_inputs), attribution
// (attribution_accumulate, attribution_maps); the others one op
// of their name. Each op's Python wrapper is in seg_xai_fast/kernels/ops/ and its pure-PyTorch twin
// in seg_xai_fast/kernels/reference/, in the module of its family (normalize, cam, seeds, display,
// perturbation, attribution).
//
// Shapes: B images, K explained classes, C channels of the target layer, (h, w) its spatial size,
// (H, W) the output/image size, M = number of maps (any flattening of leading dims), L logit classes.
// All tensors contiguous. "float" inputs: float32 on CPU; float32, float16 or bfloat16 on CUDA
// (accumulation always in float32); the ops that say float32 take float32 alone, on both devices
// (analytic_gradcampp_weights, the perturbation family). Workspaces are allocated by the caller.
#pragma once

#include <string>

#include "seg_xai/tensor_view.h"

namespace seg_xai {

// Denominator epsilons of pytorch-grad-cam (= reference.GRADCAMPP_EPS / XGRADCAM_EPS).
constexpr float kGradCamPPEps = 1e-6f;
constexpr float kXGradCamEps = 1e-7f;

enum class Method { GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, GradCAMElementWise };
Method parse_method(const char* op, const std::string& name);
bool is_weighted(Method m);  // gradcam, gradcam++, xgradcam: one weight per (class, channel)

// ReLU then per-map min-max (x − min) / (max − min + eps).
//   maps:   float [M,h,w]
//   out:    float32|float16 [M,h,w]  (may be the same memory as maps)
//   minmax: int32 [M,2] workspace (CUDA only; unused on CPU)
void normalize_maps(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                    float eps, const Exec& exec);

// Bilinear resize (align_corners=False) fused with ReLU and per-map min-max.
//   maps:   float [M,h,w]
//   out:    float32|float16 [M,H,W]
//   minmax: int32 [M,2] workspace (CUDA only)
void resize_normalize(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                      float eps, const Exec& exec);

// Trilinear resize (align_corners=False) fused with ReLU and per-volume min-max.
//   maps:   float [M,d,h,w]
//   out:    float32 [M,D,H,W]
//   minmax: int32 [M,2] workspace (CUDA only)
void resize_normalize_3d(const TensorView& maps, const TensorView& out, const TensorView& minmax,
                         float eps, const Exec& exec);

// Per-class channel weights of gradcam / gradcam++ / xgradcam, one pass over the gradients.
//   activations:  float [B,C,h,w]
//   gradients:    float [B,K,C,h,w]
//   out:          float32 [B,K,C]
//   channel_sums: float32 [B,C] workspace (S_c = Σ_u A_c(u))
void channel_weights(const TensorView& activations, const TensorView& gradients, Method method,
                     const TensorView& out, const TensorView& channel_sums, const Exec& exec);

// Grad-CAM++ channel weights of a linear head, G never formed: g = W[k,c]·R[b,k,u],
// w[b,k,c] = Σ_u relu(g)·α with α = g²/(2g² + S[b,c]·g³ + eps) where g ≠ 0, else 0
// (channel_weights(A, G = W⊗R, GradCAMPlusPlus) without the B·K·C·h·w gradient tensor).
//   activations_or_sums: float32 [B,C,h,w] activations, or float32 [B,C] sums S_c = Σ_u A_c(u)
//   weight:       float32 [K,C] (the head's rows of the explained classes)
//   seeds:        float32 [B,K,h,w] (R_k)
//   out:          float32 [B,K,C]
//   channel_sums: float32 [B,C] workspace, written when activations are given (else unused)
void analytic_gradcampp_weights(const TensorView& activations_or_sums, const TensorView& weight,
                                const TensorView& seeds, const TensorView& out,
                                const TensorView& channel_sums, const Exec& exec);

// Σ_c w_kc·A_c, then ReLU + per-map min-max as the epilogue.
//   activations: float [B,C,h,w]
//   weights:     float32 [B,K,C]
//   out:         float32 [B,K,h,w]
//   minmax:      int32 [B*K,2] workspace (CUDA only)
void weighted_cam(const TensorView& activations, const TensorView& weights, const TensorView& out,
                  const TensorView& minmax, float eps, const Exec& exec);

// hirescam Σ_c G⊙A, layercam Σ_c relu(G)⊙A or gradcam_elementwise Σ_c relu(G⊙A), then ReLU +
// per-map min-max.
//   activations: float [B,C,h,w]
//   gradients:   float [B,K,C,h,w]
//   out:         float32 [B,K,h,w]
//   minmax:      int32 [B*K,2] workspace (CUDA only)
void elementwise_cam(const TensorView& activations, const TensorView& gradients, Method method,
                     const TensorView& out, const TensorView& minmax, float eps,
                     const Exec& exec);

// Seg-XRes-CAM Σ_c G̃⊙A, G̃ = each gradient map max- or mean-pooled in pool×pool windows (tiled
// from the top-left; the last row/column of windows may be partial, a mean then counts only the
// positions inside) and nearest-upsampled back to (h, w); then ReLU + per-map min-max.
//   activations: float [B,C,h,w]
//   gradients:   float [B,K,C,h,w]
//   pool:        window side ≥ 1 (1: HiResCAM)
//   mean:        false: max-pooling, true: mean-pooling
//   out:         float32 [B,K,h,w]
//   minmax:      int32 [B*K,2] workspace (CUDA only)
void pooled_cam(const TensorView& activations, const TensorView& gradients, int64_t pool,
                bool mean, const TensorView& out, const TensorView& minmax, float eps,
                const Exec& exec);

// Colour maps through a LUT and blend onto images; maps are resized bilinearly when (h,w) ≠ (H,W).
//   images: uint8 [B,H,W,3]
//   maps:   float [B,h,w]
//   lut:    uint8 [256,3]
//   out:    uint8 [B,H,W,3]
void overlay(const TensorView& images, const TensorView& maps, const TensorView& lut, double alpha,
             const TensorView& out, const Exec& exec);

// The argmax over classes (ties → lowest class, the first NaN wins, as torch.argmax), one pass.
//   logits: float [B,L,H,W]
//   labels: int64 [B,H,W]
//   counts: int64 [B,L], when use_counts: the pixels of each class per image (the label
//           histogram, counted in the same pass; overwritten)
void class_argmax(const TensorView& logits, const TensorView& labels, const TensorView& counts, bool use_counts,
                  const Exec& exec);

// Target seeds Up*([labels == classes[k]]) for all K classes at once; the K masks are never
// stored. With labels = class_argmax(logits): the Seg-Grad-CAM predicted-class targets.
//   labels:  int64 [B,H,W]
//   classes: int64 [K] (a class no pixel has gets an all-zero seed)
//   out:     float32 [B,K,h,w]
void seeds_from_labels(const TensorView& labels, const TensorView& classes, bool align_corners,
                       const TensorView& out, const Exec& exec);

// Target seeds Up*(masks).
//   masks: float [B,K,H,W]
//   out:   float32 [B,K,h,w]
void seeds_from_masks(const TensorView& masks, bool align_corners, const TensorView& out,
                      const Exec& exec);

// ---- The perturbation family (csrc/perturbation.cpp): float32 only, on CPU and CUDA.

enum class Score { Logit, Probability, Dice };
Score parse_score(const char* op, const std::string& name);

// Region scores of all K classes on N perturbed outputs of one image, in one pass:
//   Logit: Σ_p M[k,p]·logits[n,classes[k],p]; Probability: Σ_p M[k,p]·softmax(logits[n,:,p])_k
//   / Σ_p M[k,p] (0 for an empty region); Dice: 2ΣM·P·O / (ΣM·P + ΣM·O) with P = [argmax_n = k],
//   O = [reference_labels = k] (1 when the denominator is 0).
//   logits:           float32 [N,L,h,w]
//   masks:            float32 [K,h,w]
//   classes:          int64 [K] in [0, L)
//   reference_labels: int64 [h,w] (read for Dice only)
//   out:              float32 [N,K]
void region_scores(const TensorView& logits, const TensorView& masks, const TensorView& classes,
                   Score score, const TensorView& reference_labels, const TensorView& out,
                   const Exec& exec);

// Score-CAM inputs: out[i] = image × (U_i − min U_i) / (max U_i − min U_i + eps), U_i the bilinear
// (align_corners=True) upsample of channel i to the image size.
//   image:       float32 [3,H,W]
//   activations: float32 [n,h,w]
//   out:         float32 [n,3,H,W]
void scorecam_inputs(const TensorView& image, const TensorView& activations, float eps,
                     const TensorView& out, const Exec& exec);

// RISE mask i at (y, x): the bilinear (align_corners=False) upsample of grids[i] to
// ((s+1)·ceil(H/s), (s+1)·ceil(W/s)) read at (y + dy_i, x + dx_i); generated on the fly.
//   image:  float32 [3,H,W];  grids: float32 [N,s,s];  shifts: int64 [N,2] (dy, dx)
//   out:    float32 [N,3,H,W] = image × mask_i
void rise_inputs(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                 const TensorView& out, const Exec& exec);

// out[k] = Σ_i scores[i,k]·mask_i for all K classes; N×H×W masks are never stored.
//   scores: float32 [N,K];  grids, shifts: as rise_inputs;  out: float32 [K,H,W]
void rise_accumulate(const TensorView& scores, const TensorView& grids, const TensorView& shifts,
                     const TensorView& out, const Exec& exec);

// Segment attributions' inputs: coalition i keeps the segments s with keep[i,s] ≠ 0 and replaces
// the others by the baseline: out[i,c,p] = keep[i, segments[p]] ? image[c,p] : baseline[c,p].
//   image, baseline: float32 [3,H,W];  segments: int64 [H,W] in [0, M) (checked by the caller)
//   keep: uint8 [n,M];  out: float32 [n,3,H,W]
void segment_inputs(const TensorView& image, const TensorView& baseline, const TensorView& segments,
                    const TensorView& keep, const TensorView& out, const Exec& exec);

// ---- The attribution family (csrc/attribution.cpp): the input-gradient attributions' hot path.

// In place, for i < n: total[rows[i], r] += Σ_g f(w_g·m_g[r]·grads[i,g,r]) and (use_sq)
// total_sq[rows[i], r] += Σ_g f(·)², with m_g = mult[g] (use_mult; else 1) and f = |·| (abs) or
// the identity: the weighted sum of the input gradients over IG's path steps and SmoothGrad's noise
// samples. float32 only, on CPU and CUDA.
//   grads:    float32 [n,G,R]  (n classes, G inputs per forward, R elements per input)
//   weights:  float32 [G]
//   mult:     float32 [G,R] (read when use_mult)
//   rows:     int64 [n], distinct, in [0, K) (checked by the caller)
//   total:    float32 [K,R];  total_sq: float32 [K,R] (read when use_sq)
void attribution_accumulate(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                            bool use_mult, const TensorView& rows, const TensorView& total,
                            const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec);

// The maps of attributions: out[b,k,p] = Σ_c attributions[b,k,c,p], then (normalize) ReLU and
// per-map min-max (x − min) / (max − min + eps).
//   attributions: float [B,K,C,N];  out: float32 [B,K,N];  minmax: int32 [B·K,2] (CUDA workspace)
void attribution_maps(const TensorView& attributions, const TensorView& out, bool normalize,
                      const TensorView& minmax, float eps, const Exec& exec);

// Build facts for kernels.backend.build_info().
struct BuildInfo {
  std::string version;           // package version baked in at build time
  std::string source_digest;     // digest of csrc/ at build time (_source_digest.py); "" when unknown
  std::string compiler;          // e.g. "gcc 12.2.0"
  bool openmp;                   // compiled with OpenMP
  int omp_max_threads;           // omp_get_max_threads(), 1 without OpenMP
  std::string simd;              // "avx512" | "avx2" | "scalar": the clone the CPU loops run
  bool cuda_built;               // CUDA kernels compiled in
  std::string cuda_version;      // CUDA runtime version at build time, "" without CUDA
  std::string cuda_archs;        // CMAKE_CUDA_ARCHITECTURES, "" without CUDA
  int cuda_device_count;         // devices visible now; 0 without driver/device (never throws)
};
BuildInfo build_info();

}  // namespace seg_xai
