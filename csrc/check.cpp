#include "seg_xai/check.h"

#include <string>

#include "seg_xai/ops.h"

namespace seg_xai {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::UInt8: return "uint8";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
  }
  return "unknown";
}

static std::string device_str(const TensorView& t) {
  return t.device == DeviceType::CUDA ? "cuda:" + std::to_string(t.device_index) : "cpu";
}

std::string shape_str(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

void check_dtype(const char* op, const char* arg, const TensorView& t,
                 std::initializer_list<DType> allowed) {
  std::string names;
  size_t i = 0;
  for (DType d : allowed) {
    if (d == t.dtype) return;
    names += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ");
    names += dtype_name(d);
    ++i;
  }
  fail(op, "argument '", arg, "' must be ", names, ", got ", dtype_name(t.dtype));
}

void check_ndim(const char* op, const char* arg, const TensorView& t, int ndim) {
  if (t.ndim != ndim)
    fail(op, "argument '", arg, "' must have ", ndim, " dimensions, got ", t.ndim, " (shape ",
         shape_str(t), ")");
}

void check_dim(const char* op, const char* arg, const TensorView& t, int dim, int64_t expected,
               const char* what) {
  if (t.shape[dim] != expected)
    fail(op, "argument '", arg, "' must have size ", expected, " (", what, ") in dimension ", dim,
         ", got shape ", shape_str(t));
}

void check_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (!t.is_contiguous()) fail(op, "argument '", arg, "' must be contiguous");
}

void check_not_empty(const char* op, const char* arg, const TensorView& t) {
  if (t.numel() == 0) fail(op, "argument '", arg, "' must not be empty, got shape ", shape_str(t));
}

void check_same_device(const char* op, std::initializer_list<Named> tensors) {
  const Named& first = *tensors.begin();
  for (const Named& t : tensors)
    if (t.second->device != first.second->device ||
        t.second->device_index != first.second->device_index)
      fail(op, "argument '", t.first, "' is on ", device_str(*t.second), " but argument '",
           first.first, "' is on ", device_str(*first.second), "; all tensors must be on one device");
}

Method parse_method(const char* op, const std::string& name) {
  if (name == "gradcam") return Method::GradCAM;
  if (name == "gradcam++") return Method::GradCAMPlusPlus;
  if (name == "xgradcam") return Method::XGradCAM;
  if (name == "hirescam") return Method::HiResCAM;
  if (name == "layercam") return Method::LayerCAM;
  if (name == "gradcam_elementwise") return Method::GradCAMElementWise;
  fail(op, "argument 'method' must be one of gradcam, gradcam++, xgradcam, hirescam, layercam, "
       "gradcam_elementwise, got '",
       name, "'");
}

bool is_weighted(Method m) {
  return m == Method::GradCAM || m == Method::GradCAMPlusPlus || m == Method::XGradCAM;
}

}  // namespace seg_xai
