#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "ops_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SEG_XAI_NO_CLONES)
#include <immintrin.h>
#define SEG_XAI_X86_TILES 1
#else
#define SEG_XAI_X86_TILES 0
#endif

namespace seg_xai::cpu {
namespace {

// One GEMM panel: out[k][x] (+)= Σ_c W[k][c]·A[c][x] for a channel chunk of a position block.
struct Panel {
  const float* a;  // A[b, c0, x0], channel stride lda
  int64_t lda;
  const float* w;  // W[b, k0, c0], class stride ldw
  int64_t ldw;
  float* o;        // out[b, k0, x0], class stride ldo
  int64_t ldo;
  int64_t nc;      // channels in the chunk (≤ kChannelChunk)
  bool first;      // first chunk: overwrite out, else add to it
  Panel at(int64_t x) const { return {a + x, lda, w, ldw, o + x, ldo, nc, first}; }
  Panel classes(int64_t k0) const { return {a, lda, w + k0 * ldw, ldw, o + k0 * ldo, ldo, nc, first}; }
};

// Portable tile (any CPU; the x86-64 baseline clone): 4-float vectors the compiler maps to SSE2,
// multiply then add (no FMA), 4 classes × 8 positions.
namespace portable {
struct V {
  float x[4];
};
constexpr int kL = 4, kKT = 4, kNV = 2;
inline V zero() { return V{{0.f, 0.f, 0.f, 0.f}}; }
inline V load(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
inline void store(float* p, V v) { for (int i = 0; i < 4; ++i) p[i] = v.x[i]; }
inline V bcast(float s) { return V{{s, s, s, s}}; }
inline V fmadd(V a, V b, V c) { for (int i = 0; i < 4; ++i) c.x[i] += a.x[i] * b.x[i]; return c; }
inline V add(V a, V b) { for (int i = 0; i < 4; ++i) a.x[i] += b.x[i]; return a; }
#include "weighted_cam_tile.inc"
}  // namespace portable

#if SEG_XAI_X86_TILES
// AVX2 + FMA: 4 classes × 3 vectors of 8 = 12 accumulators of 16 ymm registers.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using V = __m256;
constexpr int kL = 8, kKT = 4, kNV = 3;
inline V zero() { return _mm256_setzero_ps(); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V bcast(float s) { return _mm256_set1_ps(s); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
#include "weighted_cam_tile.inc"
}  // namespace avx2
#pragma GCC pop_options

// AVX-512: 7 classes × 3 vectors of 16 = 21 accumulators of 32 zmm registers (K = 21: 3 tiles).
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using V = __m512;
constexpr int kL = 16, kKT = 7, kNV = 3;
inline V zero() { return _mm512_setzero_ps(); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V bcast(float s) { return _mm512_set1_ps(s); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
#include "weighted_cam_tile.inc"
}  // namespace avx512
#pragma GCC pop_options
#endif

using ChunkFn = void (*)(const Panel&, int64_t K, int64_t len);

// Same priority as the target_clones of loops.cpp (simd_level()); AVX2 also needs FMA.
ChunkFn pick_chunk() {
#if SEG_XAI_X86_TILES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return avx512::chunk;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2::chunk;
#endif
  return portable::chunk;
}

}  // namespace

// activations: [B,C,h,w], weights: [B,K,C] → out: [B,K,h,w].
// Parallel over (b, block of positions). For each chunk of kChannelChunk channels the block's
// activations (≤ 64 × 192 floats, L2-resident) are read from memory once and reused by every
// class tile; each tile keeps its classes × positions sums in registers over the chunk, then
// adds them to out (the chunked float32 summation order of kChannelChunk). The min/max of each
// finished block is taken while it is still in cache; one last pass applies the min-max.
void weighted_cam_cpu(const TensorView& activations, const TensorView& weights,
                      const TensorView& out, float eps, const Exec& exec) {
  const int64_t B = activations.shape[0], C = activations.shape[1];
  const int64_t n = activations.shape[2] * activations.shape[3], K = weights.shape[1];
  const float* A = activations.ptr<float>();
  const float* Wt = weights.ptr<float>();
  float* O = out.ptr<float>();
  static const ChunkFn chunk = pick_chunk();
  // Blocks of 192 positions (a multiple of every tile width), smaller when threads would idle.
  int64_t block = 192;
  while (block > 48 && B * ((n + block - 1) / block) < 2 * int64_t(exec.num_threads)) block -= 48;
  const int64_t blocks = (n + block - 1) / block;
  std::vector<MinMax> part(B * K * blocks);  // [B,K,blocks] relu min/max of each block
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
  for (int64_t bt = 0; bt < B * blocks; ++bt) {
    const int64_t b = bt / blocks, blk = bt % blocks, x0 = blk * block;
    const int64_t len = std::min(block, n - x0);
    for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk)
      chunk(Panel{A + (b * C + c0) * n + x0, n, Wt + b * K * C + c0, C, O + b * K * n + x0, n,
                  std::min(kChannelChunk, C - c0), c0 == 0},
            K, len);
    for (int64_t k = 0; k < K; ++k)
      part[(b * K + k) * blocks + blk] = relu_min_max(O + (b * K + k) * n + x0, len);
  }
#pragma omp parallel for num_threads(exec.num_threads) schedule(static)
  for (int64_t m = 0; m < B * K; ++m) {
    MinMax r = part[m * blocks];
    for (int64_t i = 1; i < blocks; ++i)
      r.lo = std::min(r.lo, part[m * blocks + i].lo), r.hi = std::max(r.hi, part[m * blocks + i].hi);
    minmax_apply(O + m * n, O + m * n, n, r.lo, (r.hi - r.lo) + eps);
  }
}

}  // namespace seg_xai::cpu
