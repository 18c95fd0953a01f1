// Plain-data view of a tensor owned by the caller (PyTorch on the Python side).
// The core never allocates tensors: every input, output and workspace arrives as a TensorView.
#pragma once

#include <cstdint>

namespace seg_xai {

enum class DType : int { Float32, Float16, BFloat16, UInt8, Int32, Int64 };
enum class DeviceType : int { CPU, CUDA };

constexpr int kMaxDims = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, as torch.Tensor.stride()
  DeviceType device = DeviceType::CPU;
  int device_index = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// How to run an op: CPU thread count (the caller passes torch.get_num_threads()) and, for CUDA,
// the stream to launch on (cudaStream_t as void*, so this header needs no CUDA include).
struct Exec {
  int num_threads = 1;
  void* stream = nullptr;
};

const char* dtype_name(DType t);

}  // namespace seg_xai
