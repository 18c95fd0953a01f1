// Argument checks shared by every op. Each error names the op, the argument, what was expected
// and what came, e.g. "normalize_maps: argument 'maps' must be float32, got float16".
#pragma once

#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "seg_xai/tensor_view.h"

namespace seg_xai {

// Bad argument (shape, dtype, device, value): ValueError in Python.
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <typename... Parts>
[[noreturn]] void fail(const char* op, Parts&&... parts) {
  std::ostringstream msg;
  msg << op << ": ";
  (msg << ... << parts);
  throw ArgumentError(msg.str());
}

std::string shape_str(const TensorView& t);

using Named = std::pair<const char*, const TensorView*>;  // (argument name, view)

void check_dtype(const char* op, const char* arg, const TensorView& t,
                 std::initializer_list<DType> allowed);
void check_ndim(const char* op, const char* arg, const TensorView& t, int ndim);
void check_dim(const char* op, const char* arg, const TensorView& t, int dim, int64_t expected,
               const char* what);
void check_contiguous(const char* op, const char* arg, const TensorView& t);
void check_not_empty(const char* op, const char* arg, const TensorView& t);
// All tensors on one device; an error names which argument is where.
void check_same_device(const char* op, std::initializer_list<Named> tensors);

}  // namespace seg_xai
