#include "dispatch.h"

namespace seg_xai {

void attribution_accumulate(const TensorView& grads, const TensorView& weights, const TensorView& mult,
                            bool use_mult, const TensorView& rows, const TensorView& total,
                            const TensorView& total_sq, bool use_sq, bool abs, const Exec& exec) {
  constexpr const char* op = "attribution_accumulate";
  check_same_device(op, {{"grads", &grads}, {"weights", &weights}, {"mult", &mult}, {"rows", &rows},
                         {"total", &total}, {"total_sq", &total_sq}});
  check_layout(op, {{{"grads", &grads}, 3}, {{"weights", &weights}, 1}, {{"rows", &rows}, 1},
                    {{"total", &total}, 2}});
  const int64_t n = grads.shape[0], G = grads.shape[1], R = grads.shape[2];
  check_dtype(op, "grads", grads, {DType::Float32});
  check_dtype(op, "weights", weights, {DType::Float32});
  check_dtype(op, "rows", rows, {DType::Int64});
  check_dtype(op, "total", total, {DType::Float32});
  check_dim(op, "weights", weights, 0, G, "inputs per forward, as grads");
  check_dim(op, "rows", rows, 0, n, "classes, as grads");
  check_dim(op, "total", total, 1, R, "elements per input, as grads");
  if (use_mult) {
    check_layout(op, {{{"mult", &mult}, 2}});
    check_dtype(op, "mult", mult, {DType::Float32});
    check_dim(op, "mult", mult, 0, G, "inputs per forward, as grads");
    check_dim(op, "mult", mult, 1, R, "elements per input, as grads");
  }
  if (use_sq) {
    check_layout(op, {{{"total_sq", &total_sq}, 2}});
    check_dtype(op, "total_sq", total_sq, {DType::Float32});
    check_dim(op, "total_sq", total_sq, 0, total.shape[0], "rows, as total");
    check_dim(op, "total_sq", total_sq, 1, R, "elements per input, as grads");
  }
  if (grads.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::attribution_accumulate_cuda(grads, weights, mult, use_mult, rows, total,
                                                            total_sq, use_sq, abs, exec));
  else
    cpu::attribution_accumulate_cpu(grads, weights, mult, use_mult, rows, total, total_sq, use_sq, abs, exec);
}

void attribution_maps(const TensorView& attributions, const TensorView& out, bool normalize,
                      const TensorView& minmax, float eps, const Exec& exec) {
  constexpr const char* op = "attribution_maps";
  check_same_device(op, {{"attributions", &attributions}, {"out", &out}, {"minmax", &minmax}});
  check_layout(op, {{{"attributions", &attributions}, 4}, {{"out", &out}, 3}, {{"minmax", &minmax}, 2}});
  check_float(op, "attributions", attributions);
  check_dtype(op, "out", out, {DType::Float32});
  check_dtype(op, "minmax", minmax, {DType::Int32});
  check_dim(op, "out", out, 0, attributions.shape[0], "B, as attributions");
  check_dim(op, "out", out, 1, attributions.shape[1], "K, as attributions");
  check_dim(op, "out", out, 2, attributions.shape[3], "spatial elements, as attributions");
  check_dim(op, "minmax", minmax, 0, attributions.shape[0] * attributions.shape[1], "number of maps");
  check_dim(op, "minmax", minmax, 1, 2, "min and max");
  if (attributions.device == DeviceType::CUDA)
    SEG_XAI_CUDA_CALL(op, cuda::attribution_maps_cuda(attributions, out, normalize, minmax, eps, exec));
  else
    cpu::attribution_maps_cpu(attributions, out, normalize, eps, exec);
}

}  // namespace seg_xai
