#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

namespace seg_xai::cpu {
namespace {

// torch.argmax over the class axis at pixel p (ties → lowest class, the first NaN wins).
inline int64_t argmax_at(const float* x, int64_t L, int64_t HW, int64_t p) {
  int64_t best = 0;
  float v = x[p];
  for (int64_t c = 1; c < L && !std::isnan(v); ++c) {
    const float u = x[c * HW + p];
    if (u > v || std::isnan(u)) v = u, best = c;
  }
  return best;
}

// RISE geometry: each grid [s,s] upsampled to (s+1)·cell per axis; mask i at (y, x) reads the
// upsampled grid at (y + dy_i, x + dx_i). The tables cover the whole upsampled axes.
struct RiseGeometry {
  int64_t s, H, W;
  AxisTable ty, tx;
  RiseGeometry(int64_t s_, int64_t H_, int64_t W_)
      : s(s_), H(H_), W(W_),
        ty(s_, (s_ + 1) * ((H_ + s_ - 1) / s_), false),
        tx(s_, (s_ + 1) * ((W_ + s_ - 1) / s_), false) {}
  // row y of mask i (grid g, shift (dy, dx)) into row[0..W).
  void mask_row(const float* g, int64_t dy, int64_t dx, int64_t y, float* row) const {
    const int64_t Y = y + dy;
    const float* r0 = g + ty.i0[Y] * s;
    const float* r1 = g + ty.i1[Y] * s;
    const float a = ty.l0[Y], b = ty.l1[Y];
    for (int64_t x = 0; x < W; ++x) {
      const int64_t X = x + dx;
      const float top = r0[tx.i0[X]] * tx.l0[X] + r0[tx.i1[X]] * tx.l1[X];
      const float bot = r1[tx.i0[X]] * tx.l0[X] + r1[tx.i1[X]] * tx.l1[X];
      row[x] = top * a + bot * b;
    }
  }
};

}  // namespace

// One (n, k) score per iteration for logit scores; one output n per iteration otherwise (the
// softmax / argmax of a pixel is shared by all K classes). Sums in double: S is a difference
// of large sums in Ablation-CAM and occlusion.
void region_scores_cpu(const TensorView& logits, const TensorView& masks, const TensorView& classes,
                       Score score, const TensorView& reference_labels, const TensorView& out,
                       const Exec& exec) {
  const int64_t N = logits.shape[0], L = logits.shape[1], HW = logits.shape[2] * logits.shape[3];
  const int64_t K = masks.shape[0];
  const float* X = logits.ptr<float>();
  const float* M = masks.ptr<float>();
  const int64_t* cls = classes.ptr<int64_t>();
  float* S = out.ptr<float>();
  if (score == Score::Logit) {
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
    for (int64_t i = 0; i < N * K; ++i) {
      const int64_t n = i / K, k = i % K;
      const float* x = X + (n * L + cls[k]) * HW;
      const float* m = M + k * HW;
      double acc = 0.0;
      for (int64_t p = 0; p < HW; ++p) acc += double(m[p]) * double(x[p]);
      S[i] = float(acc);
    }
    return;
  }
  std::vector<double> area(K, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t p = 0; p < HW; ++p) area[k] += M[k * HW + p];
  const int64_t* ref = reference_labels.ptr<int64_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<double> a(K), b(K), c(K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = X + n * L * HW;
      std::fill(a.begin(), a.end(), 0.0), std::fill(b.begin(), b.end(), 0.0);
      std::fill(c.begin(), c.end(), 0.0);
      for (int64_t p = 0; p < HW; ++p) {
        if (score == Score::Probability) {
          float hi = x[p];
          for (int64_t l = 1; l < L; ++l) hi = std::max(hi, x[l * HW + p]);
          double total = 0.0;
          for (int64_t l = 0; l < L; ++l) total += std::exp(double(x[l * HW + p]) - hi);
          for (int64_t k = 0; k < K; ++k)
            a[k] += double(M[k * HW + p]) * std::exp(double(x[cls[k] * HW + p]) - hi) / total;
        } else {  // Dice: a = Σ M·P·O, b = Σ M·P, c = Σ M·O
          const int64_t label = argmax_at(x, L, HW, p);
          for (int64_t k = 0; k < K; ++k) {
            const double m = M[k * HW + p];
            const bool P = label == cls[k], O = ref[p] == cls[k];
            a[k] += P && O ? m : 0.0, b[k] += P ? m : 0.0, c[k] += O ? m : 0.0;
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        if (score == Score::Probability)
          S[n * K + k] = area[k] > 0 ? float(a[k] / area[k]) : 0.f;
        else
          S[n * K + k] = b[k] + c[k] > 0 ? float(2.0 * a[k] / (b[k] + c[k])) : 1.f;
      }
    }
  }
}

// One channel per iteration: its upsample in a thread-local buffer, min-max, then 3 products.
void scorecam_inputs_cpu(const TensorView& image, const TensorView& activations, float eps,
                         const TensorView& out, const Exec& exec) {
  const int64_t n = activations.shape[0], h = activations.shape[1], w = activations.shape[2];
  const int64_t H = image.shape[1], W = image.shape[2], HW = H * W;
  const AxisTable ty(h, H, true), tx(w, W, true);
  const float* img = image.ptr<float>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> up(HW);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* a = activations.ptr<float>() + i * h * w;
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t y = 0; y < H; ++y) {
        const float* r0 = a + ty.i0[y] * w;
        const float* r1 = a + ty.i1[y] * w;
        for (int64_t x = 0; x < W; ++x) {
          const float top = r0[tx.i0[x]] * tx.l0[x] + r0[tx.i1[x]] * tx.l1[x];
          const float bot = r1[tx.i0[x]] * tx.l0[x] + r1[tx.i1[x]] * tx.l1[x];
          const float v = top * ty.l0[y] + bot * ty.l1[y];
          up[y * W + x] = v;
          lo = std::min(lo, v), hi = std::max(hi, v);
        }
      }
      const float range = (hi - lo) + eps;
      float* o = out.ptr<float>() + i * 3 * HW;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t p = 0; p < HW; ++p) o[c * HW + p] = img[c * HW + p] * ((up[p] - lo) / range);
    }
  }
}

void rise_inputs_cpu(const TensorView& image, const TensorView& grids, const TensorView& shifts,
                     const TensorView& out, const Exec& exec) {
  const int64_t N = grids.shape[0], s = grids.shape[1];
  const int64_t H = image.shape[1], W = image.shape[2], HW = H * W;
  const RiseGeometry geo(s, H, W);
  const float* img = image.ptr<float>();
  const int64_t* sh = shifts.ptr<int64_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> row(W);
#pragma omp for schedule(static) collapse(2)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t y = 0; y < H; ++y) {
        geo.mask_row(grids.ptr<float>() + i * s * s, sh[2 * i], sh[2 * i + 1], y, row.data());
        float* o = out.ptr<float>() + i * 3 * HW + y * W;
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t x = 0; x < W; ++x) o[c * HW + x] = img[c * HW + y * W + x] * row[x];
      }
  }
}

// One output row y per iteration: every mask's row y is generated once and added to the K rows.
void rise_accumulate_cpu(const TensorView& scores, const TensorView& grids,
                         const TensorView& shifts, const TensorView& out, const Exec& exec) {
  const int64_t N = grids.shape[0], s = grids.shape[1], K = scores.shape[1];
  const int64_t H = out.shape[1], W = out.shape[2];
  const RiseGeometry geo(s, H, W);
  const float* sc = scores.ptr<float>();
  const int64_t* sh = shifts.ptr<int64_t>();
#pragma omp parallel num_threads(exec.num_threads)
  {
    std::vector<float> row(W);
#pragma omp for schedule(static)
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t k = 0; k < K; ++k) std::fill_n(out.ptr<float>() + (k * H + y) * W, W, 0.f);
      for (int64_t i = 0; i < N; ++i) {
        geo.mask_row(grids.ptr<float>() + i * s * s, sh[2 * i], sh[2 * i + 1], y, row.data());
        for (int64_t k = 0; k < K; ++k)
          axpy(sc[i * K + k], row.data(), out.ptr<float>() + (k * H + y) * W, W);
      }
    }
  }
}

// One (coalition, row) per iteration: the row's segment ids are read once for the 3 channels.
void segment_inputs_cpu(const TensorView& image, const TensorView& baseline,
                        const TensorView& segments, const TensorView& keep, const TensorView& out,
                        const Exec& exec) {
  const int64_t n = keep.shape[0], M = keep.shape[1];
  const int64_t H = image.shape[1], W = image.shape[2], HW = H * W;
  const float* img = image.ptr<float>();
  const float* base = baseline.ptr<float>();
  const int64_t* seg = segments.ptr<int64_t>();
#pragma omp parallel for num_threads(exec.num_threads) schedule(static) collapse(2)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < H; ++y) {
      const uint8_t* k = keep.ptr<uint8_t>() + i * M;
      const int64_t* s = seg + y * W;
      float* o = out.ptr<float>() + i * 3 * HW + y * W;
      for (int64_t c = 0; c < 3; ++c) {
        const float* a = img + c * HW + y * W;
        const float* b = base + c * HW + y * W;
        for (int64_t x = 0; x < W; ++x) o[c * HW + x] = k[s[x]] ? a[x] : b[x];
      }
    }
}

}  // namespace seg_xai::cpu
