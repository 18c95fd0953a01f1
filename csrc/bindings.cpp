// The only file that includes pybind11: converts Python arguments to TensorViews and calls the core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "seg_xai/check.h"
#include "seg_xai/ops.h"

namespace py = pybind11;
using namespace seg_xai;

namespace {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::Float32;
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "uint8") return DType::UInt8;
  if (name == "int32") return DType::Int32;
  if (name == "int64") return DType::Int64;
  throw ArgumentError("unsupported dtype '" + name + "'");
}

// ptr: data_ptr(); dtype: "float32", ...; shape/strides: in elements; device: "cpu" | "cuda".
TensorView make_view(std::uintptr_t ptr, const std::string& dtype, const std::vector<int64_t>& shape,
                     const std::vector<int64_t>& strides, const std::string& device, int index) {
  if (shape.size() != strides.size() || shape.size() > size_t(kMaxDims))
    throw ArgumentError("tensor view: shape and strides must have equal length <= 8");
  if (device != "cpu" && device != "cuda") throw ArgumentError("unsupported device '" + device + "'");
  TensorView v;
  v.data = reinterpret_cast<void*>(ptr);
  v.dtype = parse_dtype(dtype);
  v.ndim = int(shape.size());
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = shape[i], v.strides[i] = strides[i];
  v.device = device == "cuda" ? DeviceType::CUDA : DeviceType::CPU;
  v.device_index = index;
  return v;
}

Exec make_exec(int num_threads, std::uintptr_t stream) {
  return Exec{num_threads < 1 ? 1 : num_threads, reinterpret_cast<void*>(stream)};
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "seg_xai_fast compiled core (torch-free; tensors arrive as TensorView)";
  using Tv = const TensorView&;
  using Ptr = std::uintptr_t;
  auto nogil = py::call_guard<py::gil_scoped_release>();

  py::class_<TensorView>(m, "TensorView")
      .def(py::init(&make_view), "A view of caller-owned memory; shape and strides in elements.",
           py::arg("ptr"), py::arg("dtype"), py::arg("shape"),
           py::arg("strides"), py::arg("device"), py::arg("device_index"))
      .def_property_readonly("shape", [](Tv v) { return std::vector<int64_t>(v.shape, v.shape + v.ndim); })
      .def_property_readonly("dtype", [](Tv v) { return std::string(dtype_name(v.dtype)); });

  // Ops: TensorViews, then the op's scalars, then threads (CPU) and stream (cudaStream_t as an int,
  // 0: the default stream). Shapes and dtypes: seg_xai/ops.h. Bad arguments raise ValueError.
  const auto threads_arg = py::arg("threads"), stream_arg = py::arg("stream");
  const auto eps_arg = py::arg("eps"), out_arg = py::arg("out"), minmax_arg = py::arg("minmax");
  m.def("normalize_maps", [](Tv maps, Tv out, Tv minmax, float eps, int threads, Ptr stream) {
    normalize_maps(maps, out, minmax, eps, make_exec(threads, stream));
  }, nogil, "ReLU + per-map min-max.", py::arg("maps"), out_arg, minmax_arg, eps_arg, threads_arg,
     stream_arg);
  m.def("resize_normalize", [](Tv maps, Tv out, Tv minmax, float eps, int threads, Ptr stream) {
    resize_normalize(maps, out, minmax, eps, make_exec(threads, stream));
  }, nogil, "Bilinear resize (align_corners=False) + ReLU + per-map min-max.", py::arg("maps"),
     out_arg, minmax_arg, eps_arg, threads_arg, stream_arg);
  m.def("resize_normalize_3d", [](Tv maps, Tv out, Tv minmax, float eps, int threads, Ptr stream) {
    resize_normalize_3d(maps, out, minmax, eps, make_exec(threads, stream));
  }, nogil, "Trilinear resize (align_corners=False) + ReLU + per-volume min-max.", py::arg("maps"),
     out_arg, minmax_arg, eps_arg, threads_arg, stream_arg);
  m.def("channel_weights", [](Tv a, Tv g, const std::string& method, Tv out, Tv sums, int threads,
                              Ptr stream) {
    channel_weights(a, g, parse_method("channel_weights", method), out, sums, make_exec(threads, stream));
  }, nogil, "Per-class channel weights of gradcam, gradcam++ or xgradcam.", py::arg("activations"),
     py::arg("gradients"), py::arg("method"), out_arg, py::arg("channel_sums"), threads_arg,
     stream_arg);
  m.def("analytic_gradcampp_weights", [](Tv a_or_s, Tv weight, Tv seeds, Tv out, Tv sums,
                                         int threads, Ptr stream) {
    analytic_gradcampp_weights(a_or_s, weight, seeds, out, sums, make_exec(threads, stream));
  }, nogil, "Grad-CAM++ channel weights of a linear head (the gradients never formed).",
     py::arg("activations_or_sums"), py::arg("weight"), py::arg("seeds"), out_arg,
     py::arg("channel_sums"), threads_arg, stream_arg);
  m.def("weighted_cam", [](Tv a, Tv weights, Tv out, Tv minmax, float eps, int threads, Ptr stream) {
    weighted_cam(a, weights, out, minmax, eps, make_exec(threads, stream));
  }, nogil, "Sum over channels of weights * activations, then ReLU + per-map min-max.",
     py::arg("activations"), py::arg("weights"), out_arg, minmax_arg, eps_arg, threads_arg,
     stream_arg);
  m.def("elementwise_cam", [](Tv a, Tv g, const std::string& method, Tv out, Tv minmax, float eps,
                              int threads, Ptr stream) {
    elementwise_cam(a, g, parse_method("elementwise_cam", method), out, minmax, eps,
                    make_exec(threads, stream));
  }, nogil, "HiResCAM, LayerCAM or Grad-CAM element-wise, then ReLU + per-map min-max.",
     py::arg("activations"), py::arg("gradients"), py::arg("method"), out_arg, minmax_arg, eps_arg,
     threads_arg, stream_arg);
  m.def("pooled_cam", [](Tv a, Tv g, int64_t pool, bool mean, Tv out, Tv minmax, float eps,
                         int threads, Ptr stream) {
    pooled_cam(a, g, pool, mean, out, minmax, eps, make_exec(threads, stream));
  }, nogil, "Seg-XRes-CAM: gradients pooled in windows, times activations, then ReLU + min-max.",
     py::arg("activations"), py::arg("gradients"), py::arg("pool"), py::arg("mean"), out_arg,
     minmax_arg, eps_arg, threads_arg, stream_arg);
  m.def("overlay", [](Tv images, Tv maps, Tv lut, double alpha, Tv out, int threads, Ptr stream) {
    overlay(images, maps, lut, alpha, out, make_exec(threads, stream));
  }, nogil, "Colour maps through a LUT and blend them onto images.", py::arg("images"),
     py::arg("maps"), py::arg("lut"), py::arg("alpha"), out_arg, threads_arg, stream_arg);
  // counts may be None (a TensorView* from pybind: nullptr)
  m.def("class_argmax", [](Tv logits, Tv labels, const TensorView* counts, int threads, Ptr stream) {
    class_argmax(logits, labels, counts ? *counts : labels, counts != nullptr, make_exec(threads, stream));
  }, nogil, "Argmax over the class axis (as torch.argmax), and optionally each image's label histogram.",
     py::arg("logits"), py::arg("labels"), py::arg("counts").none(true), threads_arg, stream_arg);
  m.def("seeds_from_labels", [](Tv labels, Tv classes, bool align_corners, Tv out, int threads,
                                Ptr stream) {
    seeds_from_labels(labels, classes, align_corners, out, make_exec(threads, stream));
  }, nogil, "Target seeds Up*([labels == classes[k]]) for every class k.", py::arg("labels"),
     py::arg("classes"), py::arg("align_corners"), out_arg, threads_arg, stream_arg);
  m.def("seeds_from_masks", [](Tv masks, bool align_corners, Tv out, int threads, Ptr stream) {
    seeds_from_masks(masks, align_corners, out, make_exec(threads, stream));
  }, nogil, "Target seeds Up*(masks).", py::arg("masks"), py::arg("align_corners"), out_arg,
     threads_arg, stream_arg);
  m.def("region_scores", [](Tv logits, Tv masks, Tv classes, const std::string& score, Tv labels,
                            Tv out, int threads, Ptr stream) {
    region_scores(logits, masks, classes, parse_score("region_scores", score), labels, out,
                  make_exec(threads, stream));
  }, nogil, "Region scores of all K classes on N perturbed outputs.", py::arg("logits"),
     py::arg("masks"), py::arg("classes"), py::arg("score"), py::arg("reference_labels"), out_arg,
     threads_arg, stream_arg);
  m.def("scorecam_inputs", [](Tv image, Tv a, float eps, Tv out, int threads, Ptr stream) {
    scorecam_inputs(image, a, eps, out, make_exec(threads, stream));
  }, nogil, "Score-CAM inputs: image x minmax(upsample(A_c)) for a chunk of channels.",
     py::arg("image"), py::arg("activations"), eps_arg, out_arg, threads_arg, stream_arg);
  m.def("rise_inputs", [](Tv image, Tv grids, Tv shifts, Tv out, int threads, Ptr stream) {
    rise_inputs(image, grids, shifts, out, make_exec(threads, stream));
  }, nogil, "RISE inputs: image x mask_i, the masks generated from the grids on the fly.",
     py::arg("image"), py::arg("grids"), py::arg("shifts"), out_arg, threads_arg, stream_arg);
  m.def("rise_accumulate", [](Tv scores, Tv grids, Tv shifts, Tv out, int threads, Ptr stream) {
    rise_accumulate(scores, grids, shifts, out, make_exec(threads, stream));
  }, nogil, "Sum over masks of scores[i,k] * mask_i for every class, masks regenerated on the fly.",
     py::arg("scores"), py::arg("grids"), py::arg("shifts"), out_arg, threads_arg, stream_arg);
  m.def("segment_inputs", [](Tv image, Tv baseline, Tv segments, Tv keep, Tv out, int threads,
                             Ptr stream) {
    segment_inputs(image, baseline, segments, keep, out, make_exec(threads, stream));
  }, nogil, "Segment coalitions: image where keep[i, segments[p]], else the baseline.",
     py::arg("image"), py::arg("baseline"), py::arg("segments"), py::arg("keep"), out_arg,
     threads_arg, stream_arg);
  // mult and total_sq may be None (a TensorView* from pybind: nullptr)
  m.def("attribution_accumulate", [](Tv grads, Tv weights, const TensorView* mult, Tv rows, Tv total,
                                     const TensorView* total_sq, bool abs, int threads, Ptr stream) {
    attribution_accumulate(grads, weights, mult ? *mult : grads, mult != nullptr, rows, total,
                           total_sq ? *total_sq : total, total_sq != nullptr, abs, make_exec(threads, stream));
  }, nogil, "Weighted sums of input gradients over path steps and noise samples, accumulated in place.",
     py::arg("grads"), py::arg("weights"), py::arg("mult").none(true), py::arg("rows"), py::arg("total"),
     py::arg("total_sq").none(true), py::arg("abs"), threads_arg, stream_arg);
  m.def("attribution_maps", [](Tv attributions, Tv out, bool normalize, Tv minmax, float eps, int threads,
                               Ptr stream) {
    attribution_maps(attributions, out, normalize, minmax, eps, make_exec(threads, stream));
  }, nogil, "Attribution maps: the channel sum, then ReLU + per-map min-max (normalize).",
     py::arg("attributions"), out_arg, py::arg("normalize"), minmax_arg, eps_arg, threads_arg, stream_arg);

  m.def("build_info", [] {
    const BuildInfo b = build_info();
    py::dict d;
    d["version"] = b.version;
    d["source_digest"] = b.source_digest;
    d["compiler"] = b.compiler;
    d["openmp"] = b.openmp;
    d["omp_max_threads"] = b.omp_max_threads;
    d["simd"] = b.simd;
    d["cuda_built"] = b.cuda_built;
    d["cuda_version"] = b.cuda_built ? py::object(py::str(b.cuda_version)) : py::none();
    d["cuda_archs"] = b.cuda_built ? py::object(py::str(b.cuda_archs)) : py::none();
    d["cuda_device_count"] = b.cuda_device_count;
    d["cuda_available"] = b.cuda_device_count > 0;
    return d;
  }, "How the core was built and what it finds now (see kernels.backend.build_info).");
}
