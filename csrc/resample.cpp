// Antialiased box resampling with Pillow's semantics (libImaging/Resample.c, ImagingResample with a box).
//
// Both paths share one plan: per-axis coefficients computed in full-image coordinates exactly as Pillow does
// (box edges rounded to C floats as Pillow parses them, double weights normalised per output pixel, then 22-bit
// fixed point) and the order of the two passes, chosen as Pillow >= 13 chooses it (resample_vertical_first):
//  - horizontal first: a horizontal pass over only the rows the vertical pass reads into an RGB uint8
//    intermediate (out_w wide), then the vertical pass into dst;
//  - vertical first: a vertical pass over only the columns the horizontal pass reads ([xbox_first, xbox_last), as
//    the window's bytes, RGB or RGBX) into a uint8 intermediate of out_h rows, then the horizontal pass into dst.
// The intermediate is clamped to uint8 between the passes (as in Pillow), so the order changes the result
// (BICUBIC's overshoot: tens of levels on noise, 26 seen). The flip is fused by laying the horizontal
// coefficients out in mirrored order.
//
// The scalar path is the reference. The fast path (picked once at run time: AVX-512 VBMI, AVX-512 VNNI, AVX-VNNI,
// AVX2, SSE4.1, NEON, or scalar) is bit-exact too:
//  - VNNI (AVX-512 VNNI or AVX-VNNI, 256-bit vectors): each weight as three signed byte digits, four taps' products
//    per vpdpbusd; see the VNNI section below;
//  - VBMI (AVX-512 VNNI with VBMI): the same digits, but the horizontal pass gives a 32-bit lane to each output
//    byte, its taps gathered by vpermi2b from a 64-byte window of the row; see the VBMI section;
//  - x86 horizontal: each 22-bit weight k is split as k = kh * 2^11 + kl (kl in [0, 2^11)); both halves fit
//    int16, so pmaddwd on zero-extended pixel pairs gives sum(p * kh) and sum(p * kl) exactly, and
//    (hi << 11) + lo is the exact int32 sum (int32 vector arithmetic wraps mod 2^32 and the true sum fits, as in
//    Pillow). AVX2 puts two output pixels in the two 128-bit lanes and four taps in one load, RGBX or RGB (only
//    the first two taps' products when no output pixel reads more: upscales and the mildest downscales);
//  - vertical (AVX2 32 bytes of a row at a time, SSE4.1 and NEON 16): zero-extended pixels multiplied by the full
//    broadcast weight in int32 lanes (pmulld; measured faster than the split pmaddwd form on Zen 3: no pairing
//    of rows, no recombination of halves, no padding tap for an odd count).
// Reads never leave [data, data + (height - 1) * stride + width * channels): rows whose vector loads would run
// past the end of the buffer are first copied into a padded bounce row (horizontal pass on the window), and a
// vertical block whose loads would do so is computed by the scalar code (vertical pass on the window). Writes never
// leave the out_w * 3 bytes of each dst row.
//
// IPU_CNN_RESAMPLE_ISA=avx512vbmi|avx512vnni|avxvnni|avx2|sse4.1|neon|scalar (read once) picks the fast path, for
// testing the narrower paths on a wide CPU; a value the CPU does not run falls back to the best one it does.
#include "resample.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define IPU_RESAMPLE_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define IPU_RESAMPLE_NEON 1
#endif

// The coefficient arithmetic must not be contracted into FMAs (aarch64 GCC does so by default in gnu++ mode),
// or weights would differ from Pillow's in the last bit and occasionally change a rounded pixel. Only targets
// with a fast FMA are at risk (x86-64 without -mfma has none), so the attribute is applied only there.
#if defined(__GNUC__) && !defined(__clang__) && defined(__FP_FAST_FMA)
#define IPU_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define IPU_NO_FP_CONTRACT
#endif
#if defined(__clang__)
#define IPU_FP_CONTRACT_OFF _Pragma("clang fp contract(off)")
#else
#define IPU_FP_CONTRACT_OFF
#endif

namespace ipu {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images
constexpr int32_t kBias = 1 << (kPrecisionBits - 1);
constexpr int kSplitBits = 11;                // k = kh << 11 | kl for the exact 16-bit multiply-add
constexpr int kMaxOutSide = 1 << 16;          // JPEG's own limit; keeps every byte offset well inside int
constexpr int kMaxInSide = 1 << 24;           // bounds the coefficient tables (about 4 per box pixel)
constexpr double kBoxSlack = 1e-6;            // box edges this far past the image are clamped, not refused

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as Pillow's clip8
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Pillow's filters, written without data-dependent branches (|x| as fabs, the pieces selected after being
// computed); each piece is Pillow's expression evaluated in the same order, so the values are identical.
struct BilinearFilter {
  static constexpr double support = 1.0;
  IPU_NO_FP_CONTRACT static inline double eval(double x) {
    IPU_FP_CONTRACT_OFF
    x = std::fabs(x);
    const double inner = 1.0 - x;
    return x < 1.0 ? inner : 0.0;
  }
};

struct BicubicFilter {  // a = -0.5
  static constexpr double support = 2.0;
  IPU_NO_FP_CONTRACT static inline double eval(double x) {
    IPU_FP_CONTRACT_OFF
    const double a = -0.5;
    x = std::fabs(x);
    const double inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    const double outer = (((x - 5) * x + 8) * x - 4) * a;
    return x < 1.0 ? inner : (x < 2.0 ? outer : 0.0);
  }
};

struct AxisGeometry {
  double scale, filterscale, support, ss;
  int ksize;
};

// grid_size is the size the box is resized to (the output's, unless the output is a window of a larger resize).
IPU_NO_FP_CONTRACT AxisGeometry axis_geometry(double in0, double in1, int grid_size, double filter_support) {
  IPU_FP_CONTRACT_OFF
  AxisGeometry g;
  // Pillow's precompute_coeffs takes the box edges as floats and subtracts them in float.
  g.scale = double(float(float(in1) - float(in0))) / grid_size;
  g.filterscale = g.scale < 1.0 ? 1.0 : g.scale;
  g.support = filter_support * g.filterscale;
  g.ss = 1.0 / g.filterscale;
  g.ksize = int(std::ceil(g.support)) * 2 + 1;
  return g;
}

// Pillow's bounds for grid position xx: first input pixel and count, clamped to [0, in_size).
IPU_NO_FP_CONTRACT inline void axis_bounds(const AxisGeometry& g, int in_size, double in0, int xx, double* center,
                                           int* xmin, int* count) {
  IPU_FP_CONTRACT_OFF
  const double c = in0 + (xx + 0.5) * g.scale;
  int lo = int(c - g.support + 0.5);
  if (lo < 0) lo = 0;
  int hi = int(c + g.support + 0.5);
  if (hi > in_size) hi = in_size;
  *center = c;
  *xmin = lo;
  *count = hi - lo;
}

// Pillow's normalize_coeffs_8bpc: (int)(w * 2^22 + 0.5) for w >= 0, (int)(w * 2^22 - 0.5) otherwise (IEEE addition
// commutes, so the order of the operands does not matter). Branch-free so the loop over taps vectorises.
inline int32_t to_fixed(double w) {
  double v = w * (1 << kPrecisionBits) + (w < 0 ? -0.5 : 0.5);
  // Never active for boxes inside the image (|w| <= ~1.3); only keeps the conversion defined.
  v = std::min(std::max(v, -2147483647.0), 2147483647.0);
  return int32_t(v);
}

bool coefficients_in_avx2();  // the dispatch's choice (below): AVX2 also computes the coefficients

#if defined(IPU_RESAMPLE_X86)
// The filters on 4 doubles: the scalar expressions, operation for operation (no FMA: the target is AVX2 alone), so
// every lane equals F::eval of it bit for bit.
__attribute__((target("avx2"))) inline __m256d eval4(BilinearFilter, __m256d x) {
  x = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
  const __m256d inner = _mm256_sub_pd(_mm256_set1_pd(1.0), x);
  return _mm256_and_pd(_mm256_cmp_pd(x, _mm256_set1_pd(1.0), _CMP_LT_OQ), inner);
}

__attribute__((target("avx2"))) inline __m256d eval4(BicubicFilter, __m256d x) {
  const double a = -0.5;
  x = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
  const __m256d inner = _mm256_add_pd(
      _mm256_mul_pd(_mm256_mul_pd(_mm256_sub_pd(_mm256_mul_pd(_mm256_set1_pd(a + 2.0), x), _mm256_set1_pd(a + 3.0)), x),
                    x),
      _mm256_set1_pd(1.0));
  const __m256d outer = _mm256_mul_pd(
      _mm256_sub_pd(
          _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(x, _mm256_set1_pd(5.0)), x), _mm256_set1_pd(8.0)), x),
          _mm256_set1_pd(4.0)),
      _mm256_set1_pd(a));
  const __m256d r = _mm256_and_pd(_mm256_cmp_pd(x, _mm256_set1_pd(2.0), _CMP_LT_OQ), outer);
  return _mm256_blendv_pd(r, inner, _mm256_cmp_pd(x, _mm256_set1_pd(1.0), _CMP_LT_OQ));
}

// Four consecutive output positions' bounds and weights at once (grid positions xx .. xx + 3, of which the first
// `live` are wanted; ksize <= 8), one position a lane, each lane doing precompute_axis_t's scalar operations for its
// position in the same order (axis_bounds; filter values; their sum in tap order; the division by the sum when not 0;
// to_fixed), so the results are the same bit for bit. Taps past a position's count get 0. False when a wanted position
// would read no pixel or more than ksize (precompute_axis_t refuses those).
template <class F>
__attribute__((target("avx2"))) bool bounds_weights4_avx2(const AxisGeometry& g, int in_size, double in0, int xx,
                                                          int live, int ksize, int32_t xmin[4], int32_t count[4],
                                                          int32_t k[8][4]) {
  const __m256d half = _mm256_set1_pd(0.5);
  const __m256d pos = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_add_epi32(_mm_set1_epi32(xx), _mm_setr_epi32(0, 1, 2, 3))),
                                    half);
  const __m256d c = _mm256_add_pd(_mm256_set1_pd(in0), _mm256_mul_pd(pos, _mm256_set1_pd(g.scale)));
  const __m256d sup = _mm256_set1_pd(g.support);
  __m128i lo = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_sub_pd(c, sup), half));
  __m128i hi = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_add_pd(c, sup), half));
  lo = _mm_max_epi32(lo, _mm_setzero_si128());
  hi = _mm_min_epi32(hi, _mm_set1_epi32(in_size));
  const __m128i n = _mm_sub_epi32(hi, lo);
  const __m128i bad = _mm_or_si128(_mm_cmplt_epi32(n, _mm_set1_epi32(1)), _mm_cmpgt_epi32(n, _mm_set1_epi32(ksize)));
  const __m128i wanted = _mm_cmplt_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(live));
  if (_mm_movemask_epi8(_mm_and_si128(bad, wanted))) return false;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(xmin), lo);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(count), n);
  const __m256d ss = _mm256_set1_pd(g.ss);
  __m256d w[8];
  __m256d ww = _mm256_setzero_pd();
  for (int t = 0; t < ksize; t++) {
    const __m128i tap = _mm_add_epi32(lo, _mm_set1_epi32(t));
    const __m256d arg = _mm256_mul_pd(_mm256_add_pd(_mm256_sub_pd(_mm256_cvtepi32_pd(tap), c), half), ss);
    const __m128i real = _mm_cmpgt_epi32(n, _mm_set1_epi32(t));  // tap t is among the position's count
    w[t] = _mm256_and_pd(eval4(F(), arg), _mm256_castsi256_pd(_mm256_cvtepi32_epi64(real)));
    ww = _mm256_add_pd(ww, w[t]);  // in tap order; a dead tap adds +0.0, which changes no sum
  }
  const __m256d nonzero = _mm256_cmp_pd(ww, _mm256_setzero_pd(), _CMP_NEQ_UQ);
  const __m256d scale = _mm256_set1_pd(double(1 << kPrecisionBits)), lim = _mm256_set1_pd(2147483647.0);
  for (int t = 0; t < ksize; t++) {
    const __m256d x = _mm256_blendv_pd(w[t], _mm256_div_pd(w[t], ww), nonzero);
    const __m256d round = _mm256_blendv_pd(half, _mm256_set1_pd(-0.5), _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ));
    __m256d f = _mm256_add_pd(_mm256_mul_pd(x, scale), round);
    f = _mm256_min_pd(_mm256_max_pd(f, _mm256_sub_pd(_mm256_setzero_pd(), lim)), lim);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(k[t]), _mm256_cvttpd_epi32(f));
  }
  return true;
}
#endif

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis of a resize to grid_size, of which the out_size
// positions from `offset` are kept. Output position i (0 <= i < out_size) gets the coefficients of grid position
// offset + (reverse ? out_size - 1 - i : i). bounds[2i] = xmin (full-image coordinates), bounds[2i + 1] = count;
// weights[i * ksize + t], zero past count. Returns ksize and the union of the bounds; false if some output would
// read no pixel (cannot happen for a box inside the image).
template <class F>
IPU_NO_FP_CONTRACT bool precompute_axis_t(int in_size, double in0, double in1, int out_size, int grid_size, int offset,
                                          bool reverse, std::vector<int32_t>& bounds, std::vector<int32_t>& weights,
                                          int* ksize_out, int* lo_out, int* hi_out, int* max_count_out) {
  IPU_FP_CONTRACT_OFF
  const AxisGeometry g = axis_geometry(in0, in1, grid_size, F::support);
  const int ksize = g.ksize;
  if (bounds.size() < size_t(out_size) * 2) bounds.resize(size_t(out_size) * 2);
  if (weights.size() < size_t(out_size) * size_t(ksize)) weights.resize(size_t(out_size) * size_t(ksize));
  int lo = std::numeric_limits<int>::max(), hi = std::numeric_limits<int>::min(), max_count = 0;
  constexpr int kBuf = 64;
  double wbuf[kBuf];
  // Records output position xx's bounds (at its place under a flip) and returns where its weights go.
  auto keep = [&](int xx, int xmin, int count) {
    const int i = reverse ? out_size - 1 - xx : xx;
    bounds[size_t(i) * 2] = xmin;
    bounds[size_t(i) * 2 + 1] = count;
    lo = std::min(lo, xmin);
    hi = std::max(hi, xmin + count);
    max_count = std::max(max_count, count);
    return &weights[size_t(i) * size_t(ksize)];
  };
  const bool four = coefficients_in_avx2() && ksize <= 8;  // AVX2: four positions at a time
#if defined(IPU_RESAMPLE_X86)
  for (int xx = 0; four && xx < out_size; xx += 4) {
    const int live = std::min(4, out_size - xx);
    int32_t xmin4[4], count4[4], k4[8][4];
    if (!bounds_weights4_avx2<F>(g, in_size, in0, offset + xx, live, ksize, xmin4, count4, k4)) return false;
    for (int j = 0; j < live; j++) {
      int32_t* k = keep(xx + j, xmin4[j], count4[j]);
      for (int t = 0; t < ksize; t++) k[t] = k4[t][j];
    }
  }
#endif
  for (int xx = 0; !four && xx < out_size; xx++) {
    double center;
    int xmin, count;
    axis_bounds(g, in_size, in0, offset + xx, &center, &xmin, &count);
    if (count < 1 || count > ksize) return false;
    int32_t* k = keep(xx, xmin, count);
    // As Pillow: filter values, their sum in order, then each divided by the sum (when not 0), then fixed point.
    double ww = 0.0;
    if (count <= kBuf) {
      for (int x = 0; x < count; x++) {
        const double w = F::eval((x + xmin - center + 0.5) * g.ss);
        wbuf[x] = w;
        ww += w;
      }
      if (ww != 0.0)
        for (int x = 0; x < count; x++) wbuf[x] /= ww;
      for (int x = 0; x < count; x++) k[x] = to_fixed(wbuf[x]);
    } else {  // huge downscales: recompute the values instead of storing them (same doubles)
      for (int x = 0; x < count; x++) ww += F::eval((x + xmin - center + 0.5) * g.ss);
      for (int x = 0; x < count; x++) {
        double w = F::eval((x + xmin - center + 0.5) * g.ss);
        if (ww != 0.0) w /= ww;
        k[x] = to_fixed(w);
      }
    }
    for (int x = count; x < ksize; x++) k[x] = 0;
  }
  *ksize_out = ksize;
  *lo_out = lo;
  *hi_out = hi;
  *max_count_out = max_count;
  return true;
}

bool precompute_axis(int in_size, double in0, double in1, int out_size, int grid_size, int offset, Filter filter,
                     bool reverse, std::vector<int32_t>& bounds, std::vector<int32_t>& weights, int* ksize_out,
                     int* lo_out, int* hi_out, int* max_count_out) {
  if (filter == Filter::Bicubic)
    return precompute_axis_t<BicubicFilter>(in_size, in0, in1, out_size, grid_size, offset, reverse, bounds, weights,
                                            ksize_out, lo_out, hi_out, max_count_out);
  return precompute_axis_t<BilinearFilter>(in_size, in0, in1, out_size, grid_size, offset, reverse, bounds, weights,
                                           ksize_out, lo_out, hi_out, max_count_out);
}

// precompute_axis through the scratch's cache of recent geometries: a hit copies the stored bounds and weights (a few
// KiB) instead of computing them; a miss computes them and stores a copy, unless they are large (huge downscales).
bool cached_axis(ResampleScratch& s, int in_size, double in0, double in1, int out_size, int grid_size, int offset,
                 Filter filter, bool reverse, std::vector<int32_t>& bounds, std::vector<int32_t>& weights,
                 int* ksize_out, int* lo_out, int* hi_out, int* max_count_out) {
  constexpr size_t kMaxCachedWeights = size_t(1) << 16;
  const size_t nb = size_t(out_size) * 2;
  for (AxisCoefficients& c : s.cached) {
    if (c.in_size != in_size || c.out_size != out_size || c.grid_size != grid_size || c.offset != offset ||
        c.filter != int(filter) || c.reverse != reverse || c.in0 != in0 || c.in1 != in1)
      continue;
    const size_t nw = size_t(out_size) * size_t(c.ksize);
    if (bounds.size() < nb) bounds.resize(nb);
    if (weights.size() < nw) weights.resize(nw);
    std::memcpy(bounds.data(), c.bounds.data(), nb * sizeof(int32_t));
    std::memcpy(weights.data(), c.weights.data(), nw * sizeof(int32_t));
    *ksize_out = c.ksize;
    *lo_out = c.lo;
    *hi_out = c.hi;
    *max_count_out = c.max_count;
    return true;
  }
  if (!precompute_axis(in_size, in0, in1, out_size, grid_size, offset, filter, reverse, bounds, weights, ksize_out,
                       lo_out, hi_out, max_count_out))
    return false;
  const size_t nw = size_t(out_size) * size_t(*ksize_out);
  if (nw <= kMaxCachedWeights) {
    AxisCoefficients& c = s.cached[s.cache_next];
    s.cache_next = (s.cache_next + 1) % ResampleScratch::kCachedAxes;
    c.in_size = in_size;
    c.out_size = out_size;
    c.grid_size = grid_size;
    c.offset = offset;
    c.filter = int(filter);
    c.reverse = reverse;
    c.in0 = in0;
    c.in1 = in1;
    c.ksize = *ksize_out;
    c.lo = *lo_out;
    c.hi = *hi_out;
    c.max_count = *max_count_out;
    c.bounds.assign(bounds.begin(), bounds.begin() + ptrdiff_t(nb));
    c.weights.assign(weights.begin(), weights.begin() + ptrdiff_t(nw));
  }
  return true;
}

// The window with its default filled in (no grid: the output itself); false if the output does not lie inside it.
bool resolve_window(const OutputWindow& in, int out_w, int out_h, OutputWindow* w) {
  *w = in;
  if (w->grid_w == 0 && w->grid_h == 0) {
    w->grid_w = out_w;
    w->grid_h = out_h;
  }
  return w->grid_w >= 1 && w->grid_h >= 1 && w->grid_w <= kMaxInSide && w->grid_h <= kMaxInSide && w->off_x >= 0 &&
         w->off_y >= 0 && int64_t(w->off_x) + out_w <= w->grid_w && int64_t(w->off_y) + out_h <= w->grid_h;
}

// Validates the box against the image (rounded to float as Pillow does), clamping edges that overshoot the image
// by at most kBoxSlack (Pillow would refuse those; a caller's rounding should not fail a sample).
bool normalise_box(int full_width, int full_height, const double box_in[4], int out_w, int out_h, double box[4]) {
  if (full_width < 1 || full_height < 1 || full_width > kMaxInSide || full_height > kMaxInSide || out_w < 1 ||
      out_h < 1 || out_w > kMaxOutSide || out_h > kMaxOutSide)
    return false;
  for (int i = 0; i < 4; i++) {
    // Pillow parses the box as C floats ("(ffff)"): round the same way so fractional boxes give its weights.
    if (!std::isfinite(box_in[i]) || std::fabs(box_in[i]) > 1e30) return false;
    box[i] = double(float(box_in[i]));
  }
  const double lim[4] = {0.0, 0.0, double(full_width), double(full_height)};
  for (int i = 0; i < 2; i++) {
    if (box[i] < lim[i]) {
      if (box[i] < lim[i] - kBoxSlack) return false;
      box[i] = lim[i];
    }
  }
  for (int i = 2; i < 4; i++) {
    if (box[i] > lim[i]) {
      if (box[i] > lim[i] + kBoxSlack) return false;
      box[i] = lim[i];
    }
  }
  return box[2] > box[0] && box[3] > box[1];
}

// Everything both paths need, computed into the scratch vectors.
struct Plan {
  const uint8_t* data;
  ptrdiff_t stride;
  int ch, wx0, wy0, ww, wh;  // window
  int out_w, out_h;
  int kx_size, ky_size;
  int max_count_x;
  int ybox_first, ybox_last;  // full-image rows the vertical pass reads
  int xbox_first, xbox_last;  // full-image columns the horizontal pass reads
  bool vertical_first;        // pass order (Pillow >= 13's rule, see resample_vertical_first)
};

// Pillow >= 13 (python-pillow/Pillow#9549, ImagingResampleInner) resamples vertically first when the image loses
// more than twice as many rows as columns: the FULL image's size against the output size (not the box), strictly,
// and only when the height shrinks (H > out_h); an upscale (negative difference) counts as it is.
inline bool vertical_first_rule(int64_t full_width, int64_t full_height, int64_t out_w, int64_t out_h) {
  const int64_t dy = full_height - out_h, dx = full_width - out_w;
  return dy > 0 && dy > 2 * dx;
}

bool make_plan(const Region& src, const double box_in[4], int out_w, int out_h, const OutputWindow& window_in,
               Filter filter, bool flip, uint8_t* dst, int dst_stride, ResampleScratch& s, Plan* p) {
  if (!src.data || !dst || (src.channels != 3 && src.channels != 4)) return false;
  if (filter != Filter::Bilinear && filter != Filter::Bicubic) return false;
  if (src.width < 1 || src.height < 1 || src.x0 < 0 || src.y0 < 0 || src.x0 > src.full_width - src.width ||
      src.y0 > src.full_height - src.height || int64_t(src.stride) < int64_t(src.width) * src.channels)
    return false;
  double box[4];
  OutputWindow w;
  if (!normalise_box(src.full_width, src.full_height, box_in, out_w, out_h, box) ||
      !resolve_window(window_in, out_w, out_h, &w))
    return false;
  if (int64_t(dst_stride) < int64_t(out_w) * 3) return false;
  int xlo, xhi, ylo, yhi, max_count_y;
  if (!cached_axis(s, src.full_width, box[0], box[2], out_w, w.grid_w, w.off_x, filter, flip, s.bx, s.kx,
                       &p->kx_size, &xlo, &xhi, &p->max_count_x) ||
      !cached_axis(s, src.full_height, box[1], box[3], out_h, w.grid_h, w.off_y, filter, false, s.by, s.ky,
                       &p->ky_size, &ylo, &yhi, &max_count_y))
    return false;
  if (xlo < src.x0 || xhi > src.x0 + src.width || ylo < src.y0 || yhi > src.y0 + src.height) return false;
  p->data = src.data;
  p->stride = src.stride;
  p->ch = src.channels;
  p->wx0 = src.x0;
  p->wy0 = src.y0;
  p->ww = src.width;
  p->wh = src.height;
  p->out_w = out_w;
  p->out_h = out_h;
  // Pillow: first bound of the first output row to the end of the last one's.
  p->ybox_first = s.by[0];
  p->ybox_last = s.by[size_t(out_h - 1) * 2] + s.by[size_t(out_h - 1) * 2 + 1];
  p->xbox_first = xlo;  // the union (bx is stored mirrored under a flip)
  p->xbox_last = xhi;
  p->vertical_first = vertical_first_rule(src.full_width, src.full_height, w.grid_w, w.grid_h);
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Scalar reference

// One horizontal output row: `row` holds full-image column `origin_x` at its start (CH bytes per pixel).
// Everything the loop reads is in locals: the uint8 stores may alias anything, so members would be reloaded.
template <int CH>
void h_row_scalar_t(const Plan& p, const ResampleScratch& s, const uint8_t* row, int origin_x, uint8_t* out) {
  const int out_w = p.out_w;
  const size_t ksize = size_t(p.kx_size);
  const int32_t* bx = s.bx.data();
  const int32_t* kx = s.kx.data();
  for (int i = 0; i < out_w; i++) {
    const uint8_t* px = row + ptrdiff_t(bx[size_t(i) * 2] - origin_x) * CH;
    const int count = bx[size_t(i) * 2 + 1];
    const int32_t* k = kx + size_t(i) * ksize;
    int32_t a0 = kBias, a1 = kBias, a2 = kBias;
    for (int t = 0; t < count; t++) {
      a0 += px[t * CH + 0] * k[t];
      a1 += px[t * CH + 1] * k[t];
      a2 += px[t * CH + 2] * k[t];
    }
    out[i * 3 + 0] = clip8(a0);
    out[i * 3 + 1] = clip8(a1);
    out[i * 3 + 2] = clip8(a2);
  }
}

inline void h_row_scalar(const Plan& p, const ResampleScratch& s, const uint8_t* row, int origin_x, uint8_t* out) {
  if (p.ch == 4)
    h_row_scalar_t<4>(p, s, row, origin_x, out);
  else
    h_row_scalar_t<3>(p, s, row, origin_x, out);
}

// Bytes [b0, b1) of one vertical output row: `base` is the row of the first tap, taps `stride` bytes apart.
// Tap by tap over a chunk of int32 sums (the same exact integer sums as byte by byte, in a loop compilers
// vectorise); reads only bytes [b0, b1) of each tap row.
inline void v_bytes_scalar(const uint8_t* base, ptrdiff_t stride, const int32_t* k, int count, int b0, int b1,
                           uint8_t* out) {
  constexpr int kChunk = 256;
  int32_t acc[kChunk];
  for (int c0 = b0; c0 < b1; c0 += kChunk) {
    const int n = std::min(kChunk, b1 - c0);
    for (int i = 0; i < n; i++) acc[i] = kBias;
    for (int t = 0; t < count; t++) {
      const uint8_t* r = base + t * stride + c0;
      const int32_t kt = k[t];
      for (int i = 0; i < n; i++) acc[i] += r[i] * kt;
    }
    for (int i = 0; i < n; i++) out[c0 + i] = clip8(acc[i]);
  }
}

// Where a vertical pass reads and writes: full-image row r of its input is at src + (r - row0) * src_stride, and
// output row yy (nbytes bytes) at dst + yy * dst_stride. The kernels take it by value: a local copy, which the
// byte stores cannot alias, so its fields stay in registers.
struct VertIO {
  const uint8_t* src;
  ptrdiff_t src_stride;
  int row0;
  int nbytes;
  uint8_t* dst;
  ptrdiff_t dst_stride;
  // null: the input is the padded intermediate (whole-vector loads past nbytes are fine); otherwise a vector
  // load must end at or before src_end, and blocks that cannot are computed by the scalar code.
  const uint8_t* src_end;
  bool dst_padded;  // whole-vector stores past nbytes are fine (the output is the padded intermediate)
};

inline const uint8_t* v_base(const VertIO& io, const ResampleScratch& s, int yy) {
  return io.src + ptrdiff_t(s.by[size_t(yy) * 2] - io.row0) * io.src_stride;
}

// The vector block of `width` bytes at byte b of output row yy can be loaded without leaving the source buffer.
inline bool v_block_readable(const VertIO& io, const uint8_t* base, int count, int b, int width) {
  return !io.src_end || io.src_end - (base + ptrdiff_t(count - 1) * io.src_stride + b) >= width;
}

void vertical_scalar(const Plan& p, const ResampleScratch& s, const VertIO io) {
  const int32_t* by = s.by.data();
  const int32_t* ky = s.ky.data();
  const size_t ksize = size_t(p.ky_size);
  for (int yy = 0, out_h = p.out_h; yy < out_h; yy++)
    v_bytes_scalar(io.src + ptrdiff_t(by[size_t(yy) * 2] - io.row0) * io.src_stride, io.src_stride,
                   ky + size_t(yy) * ksize, by[size_t(yy) * 2 + 1], 0, io.nbytes, io.dst + yy * io.dst_stride);
}

// The two orders' vertical pass: over the horizontal intermediate (out_w * 3 bytes of rows ybox_first..), or over
// the window's bytes of columns [xbox_first, xbox_last) into the vertical intermediate.
inline VertIO vertical_io_second(const Plan& p, const uint8_t* tmp, ptrdiff_t tmp_stride, uint8_t* dst,
                                 ptrdiff_t dst_stride) {
  return VertIO{tmp, tmp_stride, p.ybox_first, p.out_w * 3, dst, dst_stride, nullptr, false};
}

inline VertIO vertical_io_first(const Plan& p, uint8_t* vtmp, ptrdiff_t vtmp_stride, bool padded) {
  const uint8_t* end = p.data + (p.wh - 1) * p.stride + ptrdiff_t(p.ww) * p.ch;
  return VertIO{p.data + ptrdiff_t(p.xbox_first - p.wx0) * p.ch, p.stride, p.wy0, (p.xbox_last - p.xbox_first) * p.ch,
                vtmp, vtmp_stride, end, padded};
}

// ---------------------------------------------------------------------------------------------------------------
// Fast-path plumbing shared by the SIMD kernels

// Intermediate rows are padded so kernels may read and write whole vectors past the last pixel of a row.
inline ptrdiff_t fast_tmp_stride(int out_w) {
  const ptrdiff_t w4 = (ptrdiff_t(out_w) + 3) & ~ptrdiff_t(3);
  return (w4 * 3 + 16 + 63) & ~ptrdiff_t(63);
}

// Byte offsets (into a row starting at full-image column origin_x) of each output pixel's first tap, padded to a
// multiple of 4 pixels with the offset of pixel 0 (padded pixels have zero weights; their results land in the row
// padding). Stored in bx after the 2 * out_w bounds entries. Returns a pointer to them.
const int32_t* fast_offsets(const Plan& p, ResampleScratch& s, int origin_x) {
  const size_t w4 = (size_t(p.out_w) + 3) & ~size_t(3);
  const size_t need = size_t(p.out_w) * 2 + w4;
  if (s.bx.size() < need) s.bx.resize(need);
  int32_t* off = &s.bx[size_t(p.out_w) * 2];
  for (size_t i = 0; i < w4; i++) {
    const size_t j = i < size_t(p.out_w) ? i : 0;
    off[i] = (s.bx[j * 2] - origin_x) * p.ch;
  }
  return off;
}

#if defined(IPU_RESAMPLE_X86)
// One 128-bit block of split weights for pmaddwd: the (kh or kl) halves of taps (t, t + 1) of output pixel i,
// repeated for the 4 channel slots. Pixels past out_w and taps past the pixel's count get 0.
inline void put_split_pair(const Plan& p, const ResampleScratch& s, size_t i, int t, bool hi, int16_t* blk) {
  const bool real = i < size_t(p.out_w);
  const int count = real ? s.bx[i * 2 + 1] : 0;
  for (int e = 0; e < 2; e++) {
    const int32_t w = t + e < count ? s.kx[i * size_t(p.kx_size) + size_t(t + e)] : 0;
    const int16_t v = int16_t(hi ? (w >> kSplitBits) : (w & ((1 << kSplitBits) - 1)));  // >>: floor
    for (int rep = 0; rep < 4; rep++) blk[rep * 2 + e] = v;
  }
}

// Horizontal weights, split for the exact 16-bit multiply-add, in the order the row kernels read them.
//  AVX2 (pair_lanes): per output pixel pair (A, B) and group of 4 taps, 4 vectors of [A | B] 128-bit lanes:
//    kh(t0, t1), kl(t0, t1), kh(t2, t3), kl(t2, t3).
//  SSE4.1: per output pixel and group of 2 taps, 2 vectors: kh(t0, t1), kl(t0, t1).
// Output pixels are padded to a multiple of 4.
void fast_split_weights(const Plan& p, ResampleScratch& s, int groups, bool pair_lanes) {
  const size_t w4 = (size_t(p.out_w) + 3) & ~size_t(3);
  const int taps = pair_lanes ? 4 : 2;
  const size_t need = w4 * size_t(groups) * size_t(taps) * 2 * 4;  // int16: pixels * taps * (hi, lo) * 4 slots
  if (s.kx16.size() < need) s.kx16.resize(need);
  int16_t* dst = s.kx16.data();
  if (pair_lanes) {
    for (size_t j = 0; j < w4; j += 2) {
      for (int g = 0; g < groups; g++) {
        for (int q = 0; q < 4; q++) {
          const int t = g * 4 + (q >= 2 ? 2 : 0);
          put_split_pair(p, s, j, t, q % 2 == 0, dst);
          put_split_pair(p, s, j + 1, t, q % 2 == 0, dst + 8);
          dst += 16;
        }
      }
    }
  } else {
    for (size_t i = 0; i < w4; i++) {
      for (int g = 0; g < groups; g++) {
        put_split_pair(p, s, i, g * 2, true, dst);
        put_split_pair(p, s, i, g * 2, false, dst + 8);
        dst += 16;
      }
    }
  }
}

#endif  // IPU_RESAMPLE_X86

// Runs `row_fn(window_row_pointer, out_row)` for each intermediate row, handing it a padded copy of the row
// when the kernel's reads (up to `max_read` bytes from the row start) would pass the end of the source buffer;
// two consecutive rows that need no copy go to `pair_fn(row, row_step, out, out_step)` together.
template <class RowFn, class PairFn>
void for_each_source_row(const Plan& p, uint8_t* tmp, ptrdiff_t tmp_stride, ptrdiff_t max_read, RowFn row_fn,
                         PairFn pair_fn) {
  const uint8_t* end = p.data + (p.wh - 1) * p.stride + ptrdiff_t(p.ww) * p.ch;
  const ptrdiff_t row_bytes = ptrdiff_t(p.ww) * p.ch;
  uint8_t* bounce = tmp + (p.ybox_last - p.ybox_first) * tmp_stride;  // sized by the caller
  for (int y = p.ybox_first; y < p.ybox_last;) {
    const uint8_t* row = p.data + (y - p.wy0) * p.stride;
    uint8_t* out = tmp + (y - p.ybox_first) * tmp_stride;
    if (y + 1 < p.ybox_last && end - (row + p.stride) >= max_read) {
      pair_fn(row, p.stride, out, tmp_stride);
      y += 2;
      continue;
    }
    if (end - row < max_read) {
      std::memcpy(bounce, row, size_t(row_bytes));
      std::memset(bounce + row_bytes, 0, size_t(max_read - row_bytes));
      row = bounce;
    }
    row_fn(row, out);
    y += 1;
  }
}

// Ensures tmp holds the intermediate plus a bounce row of max(max_read, row bytes).
uint8_t* fast_tmp(const Plan& p, ResampleScratch& s, ptrdiff_t tmp_stride, ptrdiff_t max_read) {
  const size_t need = size_t(p.ybox_last - p.ybox_first) * size_t(tmp_stride) +
                      size_t(std::max<ptrdiff_t>(max_read, ptrdiff_t(p.ww) * p.ch)) + 64;
  if (s.tmp.size() < need) s.tmp.resize(need);
  return s.tmp.data();
}

// Vertical-first layout of tmp: out_h rows of the column span, each padded to a whole number of 32-byte vertical
// blocks (so the vertical kernels store whole vectors), then room for the horizontal kernels' over-read of the last
// row (up to max_read bytes from a row start), then an output bounce row of out_bytes.
struct VFirstTmp {
  uint8_t* rows;
  ptrdiff_t stride;
  uint8_t* bounce;
};

VFirstTmp fast_tmp_vfirst(const Plan& p, ResampleScratch& s, ptrdiff_t max_read, ptrdiff_t out_bytes) {
  const ptrdiff_t span = ptrdiff_t(p.xbox_last - p.xbox_first) * p.ch;
  const ptrdiff_t stride = (span + 32 + 31) & ~ptrdiff_t(31);  // past the end of the last (whole) block
  const ptrdiff_t tail = std::max<ptrdiff_t>(max_read, stride) + 64;
  const size_t need = size_t(p.out_h) * size_t(stride) + size_t(tail) + size_t(out_bytes) + 64;
  if (s.tmp.size() < need) s.tmp.resize(need);
  uint8_t* rows = s.tmp.data();
  return VFirstTmp{rows, stride, rows + size_t(p.out_h) * size_t(stride) + size_t(tail)};
}

// Runs `row_fn(intermediate_row, out_row)` for the vertical-first horizontal pass. A kernel that writes
// `out_write` bytes (more than the out_w * 3 of a dst row) writes straight into dst only where the excess falls on
// the next dst row, which is written afterwards (contiguous rows, not the last row); elsewhere into a bounce row,
// then copied.
template <class RowFn>
void for_each_vfirst_row(const Plan& p, const VFirstTmp& t, uint8_t* dst, ptrdiff_t dst_stride, ptrdiff_t out_write,
                         RowFn row_fn) {
  const ptrdiff_t row_bytes = ptrdiff_t(p.out_w) * 3;
  const bool fits = out_write <= row_bytes;
  const bool spill_ok = dst_stride == row_bytes && out_write <= 2 * row_bytes;
  for (int yy = 0; yy < p.out_h; yy++) {
    const uint8_t* row = t.rows + yy * t.stride;
    uint8_t* out = dst + yy * dst_stride;
    if (fits || (spill_ok && yy + 1 < p.out_h)) {
      row_fn(row, out);
    } else {
      row_fn(row, t.bounce);
      std::memcpy(out, t.bounce, size_t(row_bytes));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// x86: AVX2 and SSE4.1

#if defined(IPU_RESAMPLE_X86)

// The horizontal pair kernels (NR = 2: two source rows a call, left to right) fetch the bytes at `offset` of the next
// pair's two rows into L1 while they work on this pair. The decoder wrote the region just before, but by then much
// of it has left L2 (libjpeg's own buffers and the file pass through the same cache), so without this the kernels
// wait on it: inside the pipeline the VBMI pass ran ~1.6x its in-cache time per block, 20-28% less with the
// prefetch, the AVX2 kernels 10-17% less (measured on a Zen 4; docs/performance.md, "Prefetching the next row
// pair"). A prefetch never faults, so rows past the region may be named; the address is formed as an integer, not as
// a pointer past the buffer. Single rows (NR = 1: the region's last row, bounce rows, the vertical-first pass) are not
// prefetched for.
template <int NR>
inline void prefetch_next_pair(const uint8_t* row, ptrdiff_t row_step, ptrdiff_t offset) {
  if constexpr (NR != 2) return;
  const uintptr_t at = reinterpret_cast<uintptr_t>(row) + uintptr_t(2 * row_step + offset);
  _mm_prefetch(reinterpret_cast<const char*>(at), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(at + uintptr_t(row_step)), _MM_HINT_T0);
}

// pshufb masks turning 2 pixels (bytes at 0..2*CH) into int16 pairs (R0 R1 G0 G1 B0 B1 0 0), per 128-bit lane.
template <int CH>
struct PairMask;
template <>
struct PairMask<4> {
  static constexpr int8_t m[16] = {0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, -1, -1, -1, -1};
};
template <>
struct PairMask<3> {
  static constexpr int8_t m[16] = {0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1};
};
constexpr int8_t PairMask<4>::m[16];
constexpr int8_t PairMask<3>::m[16];

// Four output pixels' RGB from the int32 sums of two pairs ([p0 | p1] and [p2 | p3], each 128-bit lane a pixel's
// R G B X, already shifted down), clipped to uint8: one 16-byte store of which 12 bytes are the pixels (the
// horizontal kernels' rows are padded for it).
__attribute__((target("avx2"))) inline void store_rgb4(uint8_t* out, __m256i p01, __m256i p23) {
  const __m128i rgb = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  __m256i pk = _mm256_packs_epi32(p01, p23);  // lane 0: p0 p2, lane 1: p1 p3 (int16)
  pk = _mm256_packus_epi16(pk, pk);           // lane 0: p0 p2 p0 p2, lane 1: p1 p3 p1 p3 (uint8)
  const __m128i px4 = _mm_unpacklo_epi32(_mm256_castsi256_si128(pk), _mm256_extracti128_si256(pk, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_shuffle_epi8(px4, rgb));
}

// AVX2 horizontal row, 4 output pixels per iteration as two pairs (A, B). For each group of 4 taps, A's 16
// source bytes go to lane 0 and B's to lane 1; one pshufb per lane makes the int16 pairs of taps (0, 1), another
// those of taps (2, 3), so the lane sums come out as [A | B] with no cross-lane reduction. 12 RGB bytes are
// stored per 16-byte write (the intermediate row is padded). GFIX > 0 fixes the group count. NR rows (row + r *
// row_step into out + r * out_step) are done together: they share the offsets, the weights and the loop.
template <int CH, int GFIX, int NR, bool TWO = false>
__attribute__((target("avx2"))) void h_row_avx2(const uint8_t* row, ptrdiff_t row_step, uint8_t* out,
                                                ptrdiff_t out_step, const int32_t* off, const int16_t* kw, int w4,
                                                int groups_rt) {
  const int groups = GFIX > 0 ? GFIX : groups_rt;
  const __m128i m01 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(PairMask<CH>::m));
  const __m128i m23 =
      _mm_add_epi8(m01, _mm_and_si128(_mm_cmpgt_epi8(m01, _mm_set1_epi8(-1)), _mm_set1_epi8(2 * CH)));
  const __m256i mask01 = _mm256_broadcastsi128_si256(m01);
  const __m256i mask23 = _mm256_broadcastsi128_si256(m23);
  const __m256i bias = _mm256_setr_epi32(kBias, kBias, kBias, 0, kBias, kBias, kBias, 0);
  const __m256i* kv = reinterpret_cast<const __m256i*>(kw);
  for (int i = 0; i < w4; i += 4) {
    prefetch_next_pair<NR>(row, row_step, off[i]);
    __m256i acc[NR][2];
    for (int pr = 0; pr < 2; pr++) {
      const ptrdiff_t oa = off[i + 2 * pr], ob = off[i + 2 * pr + 1];
      __m256i hi[NR], lo[NR];
      for (int r = 0; r < NR; r++) hi[r] = _mm256_setzero_si256(), lo[r] = bias;
      for (int g = 0; g < groups; g++) {
        const __m256i kh01 = _mm256_loadu_si256(kv), kl01 = _mm256_loadu_si256(kv + 1);
        const __m256i kh23 = _mm256_loadu_si256(kv + 2), kl23 = _mm256_loadu_si256(kv + 3);
        for (int r = 0; r < NR; r++) {
          const uint8_t* src = row + r * row_step + g * 4 * CH;
          const __m256i v = _mm256_inserti128_si256(
              _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + oa))),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + ob)), 1);
          const __m256i v01 = _mm256_shuffle_epi8(v, mask01);
          if (TWO) {  // taps 2 and 3 have zero weights: skip their products
            hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(v01, kh01));
            lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(v01, kl01));
            continue;
          }
          const __m256i v23 = _mm256_shuffle_epi8(v, mask23);
          hi[r] = _mm256_add_epi32(hi[r], _mm256_add_epi32(_mm256_madd_epi16(v01, kh01), _mm256_madd_epi16(v23, kh23)));
          lo[r] = _mm256_add_epi32(lo[r], _mm256_add_epi32(_mm256_madd_epi16(v01, kl01), _mm256_madd_epi16(v23, kl23)));
        }
        kv += 4;
      }
      for (int r = 0; r < NR; r++)
        acc[r][pr] =
            _mm256_srai_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi[r], kSplitBits), lo[r]), kPrecisionBits);
    }
    for (int r = 0; r < NR; r++) store_rgb4(out + r * out_step + i * 3, acc[r][0], acc[r][1]);
  }
}

// A vertical output row's weights for the AVX2 block: C taps fixed, broadcast once per row and held in registers (read
// through a pointer inside the block loop, they would be loaded again after every store: a byte store may alias
// them). KWeights<0> takes any count and broadcasts them in the loop.
template <int C>
struct KWeights {
  __m256i k[C];
  __attribute__((target("avx2"))) KWeights(const int32_t* w, int) {
    for (int t = 0; t < C; t++) k[t] = _mm256_set1_epi32(w[t]);
  }
  static constexpr int count() { return C; }
  __attribute__((target("avx2"))) __m256i at(int t) const { return k[t]; }
};

template <>
struct KWeights<0> {
  const int32_t* k;
  int n;
  KWeights(const int32_t* w, int count) : k(w), n(count) {}
  int count() const { return n; }
  __attribute__((target("avx2"))) __m256i at(int t) const { return _mm256_set1_epi32(k[t]); }
};

// AVX2 vertical pass, 32 bytes of one output row, with the full 22-bit weights: each tap's 32 bytes zero-extended
// to int32 (four groups of 8) and multiplied by the broadcast weight (pmulld), so no pairing of rows and no split of
// the weights; an odd tap count costs no padding tap. packs/packus leave the 8-byte groups in lane order
// (0, 2, 1, 3 per lane pair), which one vpermd puts back.
template <class W>
__attribute__((target("avx2"))) inline __m256i v_block_avx2(const uint8_t* base, ptrdiff_t stride, const W& w) {
  const __m256i bias = _mm256_set1_epi32(kBias);
  __m256i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
  for (int t = 0; t < w.count(); t++) {
    const uint8_t* r = base + t * stride;
    const __m256i kv = w.at(t);
    a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                     reinterpret_cast<const __m128i*>(r))), kv));
    a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                     reinterpret_cast<const __m128i*>(r + 8))), kv));
    a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                     reinterpret_cast<const __m128i*>(r + 16))), kv));
    a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                     reinterpret_cast<const __m128i*>(r + 24))), kv));
  }
  a0 = _mm256_srai_epi32(a0, kPrecisionBits);
  a1 = _mm256_srai_epi32(a1, kPrecisionBits);
  a2 = _mm256_srai_epi32(a2, kPrecisionBits);
  a3 = _mm256_srai_epi32(a3, kPrecisionBits);
  // packs per lane: [a0.lo a1.lo | a0.hi a1.hi], [a2.lo a3.lo | a2.hi a3.hi]; packus: 4-byte groups in the order
  // 0 2 4 6 | 1 3 5 7 of the 8 groups (group g = bytes 4g..4g+3).
  const __m256i pk = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
  return _mm256_permutevar8x32_epi32(pk, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// The last, partial block of a vertical output row (n < 32 bytes at out), already computed: stored whole where the
// output is padded, else through a bounce block.
__attribute__((target("avx2"))) inline void v_store_partial(const VertIO& io, uint8_t* out, int n, __m256i v) {
  if (io.dst_padded) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v);
  } else {
    alignas(32) uint8_t last[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(last), v);
    std::memcpy(out, last, size_t(n));
  }
}

// One vertical output row with the AVX2 block: `base` is the row of the first tap, k its count weights. The last,
// partial block is a whole block where it can be read, else the scalar code.
template <class W>
__attribute__((target("avx2"))) inline void v_row_avx2_w(const VertIO& io, const uint8_t* base, const int32_t* k,
                                                         int count, const W& w, uint8_t* out) {
  const int nbytes = io.nbytes;
  int b = 0;
  for (; b + 32 <= nbytes; b += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b), v_block_avx2(base + b, io.src_stride, w));
  if (b == nbytes) return;
  if (v_block_readable(io, base, count, b, 32))
    v_store_partial(io, out + b, nbytes - b, v_block_avx2(base + b, io.src_stride, w));
  else
    v_bytes_scalar(base, io.src_stride, k, count, b, nbytes, out);
}

// The counts of upscales and of downscales up to ~1.5x (bilinear) have their weights in registers.
__attribute__((target("avx2"))) inline void v_row_avx2(const VertIO& io, const uint8_t* base, const int32_t* k,
                                                       int count, uint8_t* out) {
  if (count == 2)
    v_row_avx2_w(io, base, k, count, KWeights<2>(k, count), out);
  else if (count == 3)
    v_row_avx2_w(io, base, k, count, KWeights<3>(k, count), out);
  else if (count == 4)
    v_row_avx2_w(io, base, k, count, KWeights<4>(k, count), out);
  else
    v_row_avx2_w(io, base, k, count, KWeights<0>(k, count), out);
}

__attribute__((target("avx2"))) void vertical_avx2(const Plan& p, const ResampleScratch& s, const VertIO io) {
  for (int yy = 0; yy < p.out_h; yy++)
    v_row_avx2(io, v_base(io, s, yy), &s.ky[size_t(yy) * size_t(p.ky_size)], s.by[size_t(yy) * 2 + 1],
               io.dst + yy * io.dst_stride);
}

// The horizontal passes run the row kernel over the rows `rows(row_fn, pair_fn)` hands out (for_each_source_row or
// for_each_vfirst_row); pair_fn(row, row_step, out, out_step) does two rows at once.
template <int CH, class Rows>
void horizontal_avx2(const Plan& p, const ResampleScratch& s, const int32_t* off, int groups, Rows rows) {
  const int w4 = (p.out_w + 3) & ~3;
  const int16_t* kw = s.kx16.data();
  auto run = [&](auto gfix, auto two) {
    constexpr int G = decltype(gfix)::value;
    constexpr bool TWO = decltype(two)::value;
    rows([&](const uint8_t* row, uint8_t* out) { h_row_avx2<CH, G, 1, TWO>(row, 0, out, 0, off, kw, w4, groups); },
         [&](const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step) {
           h_row_avx2<CH, G, 2, TWO>(row, row_step, out, out_step, off, kw, w4, groups);
         });
  };
  // Upscales read 2 taps per output pixel (Pillow's bilinear support is one pixel either side), as do mild
  // downscales; 40% of 224-px train crops of ImageNet photos.
  if (p.max_count_x <= 2)
    run(std::integral_constant<int, 1>(), std::true_type());
  else if (groups == 1)
    run(std::integral_constant<int, 1>(), std::false_type());
  else if (groups == 2)
    run(std::integral_constant<int, 2>(), std::false_type());
  else
    run(std::integral_constant<int, 0>(), std::false_type());
}

// SSE4.1 horizontal row: 2 taps per group (8-byte load), 4 output pixels per iteration.
template <int CH>
__attribute__((target("sse4.1"))) void h_row_sse41(const uint8_t* row, uint8_t* out, const int32_t* off,
                                                   const int16_t* kw, int w4, int groups) {
  const __m128i mask = _mm_loadu_si128(reinterpret_cast<const __m128i*>(PairMask<CH>::m));
  const __m128i bias = _mm_setr_epi32(kBias, kBias, kBias, 0);
  const __m128i rgb = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const __m128i* kv = reinterpret_cast<const __m128i*>(kw);
  for (int i = 0; i < w4; i += 4) {
    __m128i acc[4];
    for (int q = 0; q < 4; q++) {
      const uint8_t* px = row + off[i + q];
      __m128i hi = _mm_setzero_si128(), lo = bias;
      for (int g = 0; g < groups; g++) {
        const __m128i v =
            _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(px + g * 2 * CH)), mask);
        hi = _mm_add_epi32(hi, _mm_madd_epi16(v, _mm_loadu_si128(kv)));
        lo = _mm_add_epi32(lo, _mm_madd_epi16(v, _mm_loadu_si128(kv + 1)));
        kv += 2;
      }
      acc[q] = _mm_srai_epi32(_mm_add_epi32(_mm_slli_epi32(hi, kSplitBits), lo), kPrecisionBits);
    }
    const __m128i pk = _mm_packus_epi16(_mm_packs_epi32(acc[0], acc[1]), _mm_packs_epi32(acc[2], acc[3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * 3), _mm_shuffle_epi8(pk, rgb));
  }
}

__attribute__((target("sse4.1"))) inline __m128i v_block_sse41(const uint8_t* base, ptrdiff_t stride,
                                                               const int32_t* k, int count) {
  const __m128i bias = _mm_set1_epi32(kBias);
  __m128i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
  for (int t = 0; t < count; t++) {
    const uint8_t* p = base + t * stride;
    const __m128i kv = _mm_set1_epi32(k[t]);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    a0 = _mm_add_epi32(a0, _mm_mullo_epi32(_mm_cvtepu8_epi32(v), kv));
    a1 = _mm_add_epi32(a1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 4)), kv));
    a2 = _mm_add_epi32(a2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 8)), kv));
    a3 = _mm_add_epi32(a3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 12)), kv));
  }
  a0 = _mm_srai_epi32(a0, kPrecisionBits);
  a1 = _mm_srai_epi32(a1, kPrecisionBits);
  a2 = _mm_srai_epi32(a2, kPrecisionBits);
  a3 = _mm_srai_epi32(a3, kPrecisionBits);
  return _mm_packus_epi16(_mm_packs_epi32(a0, a1), _mm_packs_epi32(a2, a3));
}

__attribute__((target("sse4.1"))) void vertical_sse41(const Plan& p, const ResampleScratch& s, const VertIO io) {
  const int nbytes = io.nbytes;
  for (int yy = 0; yy < p.out_h; yy++) {
    const uint8_t* base = v_base(io, s, yy);
    const int count = s.by[size_t(yy) * 2 + 1];
    const int32_t* k = &s.ky[size_t(yy) * size_t(p.ky_size)];
    uint8_t* out = io.dst + yy * io.dst_stride;
    int b = 0;
    for (; b + 16 <= nbytes; b += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b), v_block_sse41(base + b, io.src_stride, k, count));
    if (b == nbytes) continue;
    if (!v_block_readable(io, base, count, b, 16)) {
      v_bytes_scalar(base, io.src_stride, k, count, b, nbytes, out);
    } else if (io.dst_padded) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b), v_block_sse41(base + b, io.src_stride, k, count));
    } else {
      alignas(16) uint8_t last[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(last), v_block_sse41(base + b, io.src_stride, k, count));
      std::memcpy(out + b, last, size_t(nbytes - b));
    }
  }
}

template <int CH, class Rows>
void horizontal_sse41(const Plan& p, const ResampleScratch& s, const int32_t* off, int groups, Rows rows) {
  const int w4 = (p.out_w + 3) & ~3;
  const int16_t* kw = s.kx16.data();
  auto row_fn = [&](const uint8_t* row, uint8_t* out) { h_row_sse41<CH>(row, out, off, kw, w4, groups); };
  rows(row_fn, [&](const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step) {
    row_fn(row, out);
    row_fn(row + row_step, out + out_step);
  });
}


// VNNI: vpdpbusd on 256-bit vectors (AVX-512 VNNI with AVX512VL, or AVX-VNNI's VEX form; the kernels are in
// resample_vnni.h, compiled once for each) multiplies four unsigned pixel bytes by four signed weight bytes and adds
// the sum to an int32 lane, in one instruction. A 22-bit weight k is written as three signed byte digits,
// k = d2 * 2^16 + d1 * 2^8 + d0 (each in [-128, 127]), so sum(p * k) = s0 + (s1 << 8) + (s2 << 16) with
// s_j = sum(p * d_j) computed exactly by vpdpbusd (no saturation); int32 arithmetic wraps mod 2^32 and the true sum
// fits, so the combination is exact, as in the split pmaddwd form. Four taps share one instruction per digit:
//  - horizontal: a 128-bit lane holds one output pixel's four taps of R, of G, of B (and 4 zero bytes for X),
//    gathered from one 16-byte load by one pshufb; two output pixels per vector, as in the AVX2 kernel;
//  - vertical: four rows' bytes interleaved (punpck 8 then 16) so a lane holds one output byte's four taps; the
//    unpacks' lane order is undone by packs/packus, so no permute.

// Which taps counts VNNI takes. With up to 3 taps (upscales, scales up to 1) a VNNI group of 4 plus the digits'
// recombination costs more than the AVX2 kernels' exact products (measured over the corpus's train resizes: VNNI ~7%
// slower there, equal at 4, 20-25% faster from 5); above 64 a vertical row's tap offset table would be too long.
constexpr int kVnniMinTaps = 4, kVnniMaxTaps = 64;
inline bool vnni_takes(int count) { return count >= kVnniMinTaps && count <= kVnniMaxTaps; }

// The digits of k, false when the top one does not fit a signed byte (|k| >= ~2^23: weights of magnitude 2 or more,
// which normalised weights never reach; the caller then uses the AVX2 kernels).
inline bool weight_digits(int32_t k, int8_t d[3]) {
  const int32_t d0 = ((k + 128) & 255) - 128;  // k - d0 is a multiple of 256
  const int32_t k1 = (k - d0) >> 8;
  const int32_t d1 = ((k1 + 128) & 255) - 128;
  const int32_t d2 = (k1 - d1) >> 8;
  if (d2 < -128 || d2 > 127) return false;
  d[0] = int8_t(d0);
  d[1] = int8_t(d1);
  d[2] = int8_t(d2);
  return true;
}

// Horizontal weights for the VNNI row kernel: per output pixel pair (A, B) and group of 4 taps, 3 vectors (digit 0,
// 1, 2) of [A | B] 128-bit lanes, each lane the 4 taps' digits repeated for the R, G, B, X slots. Taps past a pixel's
// count and pixels past out_w get 0. False if some weight has no 3-digit form.
bool vnni_h_weights(const Plan& p, ResampleScratch& s, int groups) {
  const size_t w4 = (size_t(p.out_w) + 3) & ~size_t(3);
  const size_t need = w4 * size_t(groups) * 3 * 16;
  if (s.kx8.size() < need) s.kx8.resize(need);
  int8_t* dst = s.kx8.data();
  for (size_t j = 0; j < w4; j += 2) {
    for (int g = 0; g < groups; g++, dst += 96) {
      for (size_t e = 0; e < 2; e++) {
        const size_t i = j + e;
        const int count = i < size_t(p.out_w) ? s.bx[i * 2 + 1] : 0;
        uint32_t quad[3] = {0, 0, 0};  // byte q: the digit of tap 4g + q
        for (int q = 0; q < 4 && g * 4 + q < count; q++) {
          int8_t d[3];
          if (!weight_digits(s.kx[i * size_t(p.kx_size) + size_t(g * 4 + q)], d)) return false;
          for (int digit = 0; digit < 3; digit++) quad[digit] |= uint32_t(uint8_t(d[digit])) << (8 * q);
        }
        for (int digit = 0; digit < 3; digit++)
          for (int slot = 0; slot < 4; slot++) std::memcpy(dst + digit * 32 + int(e) * 16 + slot * 4, &quad[digit], 4);
      }
    }
  }
  return true;
}

// Vertical weights of the rows VNNI takes (vnni_takes): per output row and group of 4 taps, 3 int32s (digit 0, 1,
// 2), byte q of each the digit of tap 4g + q (0 past the row's count).
bool vnni_v_weights(const Plan& p, ResampleScratch& s) {
  const int groups = (p.ky_size + 3) / 4;
  const size_t need = size_t(p.out_h) * size_t(groups) * 3;
  if (s.ky4.size() < need) s.ky4.resize(need);
  for (int yy = 0; yy < p.out_h; yy++) {
    const int count = s.by[size_t(yy) * 2 + 1];
    if (!vnni_takes(count)) continue;  // the AVX2 block, with the full weights
    for (int g = 0; g < groups; g++) {
      uint32_t quad[3] = {0, 0, 0};
      for (int q = 0; q < 4; q++) {
        const int t = g * 4 + q;
        int8_t d[3] = {0, 0, 0};
        if (t < count && !weight_digits(s.ky[size_t(yy) * size_t(p.ky_size) + size_t(t)], d)) return false;
        for (int digit = 0; digit < 3; digit++) quad[digit] |= uint32_t(uint8_t(d[digit])) << (8 * q);
      }
      for (int digit = 0; digit < 3; digit++)
        s.ky4[(size_t(yy) * size_t(groups) + size_t(g)) * 3 + size_t(digit)] = int32_t(quad[digit]);
    }
  }
  return true;
}

// pshufb masks gathering one output pixel's 4 taps (bytes from the pixel's first tap) as R0..R3 G0..G3 B0..B3 0000.
template <int CH>
struct QuadMask;
template <>
struct QuadMask<4> {
  static constexpr int8_t m[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, -1, -1, -1, -1};
};
template <>
struct QuadMask<3> {
  static constexpr int8_t m[16] = {0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, -1, -1, -1, -1};
};
constexpr int8_t QuadMask<4>::m[16];
constexpr int8_t QuadMask<3>::m[16];

// run(std::integral_constant<int, G>()) with G = groups for the common counts 1 and 2 (the row kernels' loops then
// unroll), else G = 0 (the kernel reads the count at run time).
template <class Run>
inline void with_fixed_groups(int groups, Run run) {
  if (groups == 1)
    run(std::integral_constant<int, 1>());
  else if (groups == 2)
    run(std::integral_constant<int, 2>());
  else
    run(std::integral_constant<int, 0>());
}

// Row offsets from the first tap's row of taps 0 .. n - 1 of a vertical VNNI row (groups of 4 taps), the taps past
// the row's count repeating its last row (with zero weights).
inline void tap_row_offsets(ptrdiff_t* off, int n, int count, ptrdiff_t stride) {
  for (int t = 0; t < n; t++) off[t] = ptrdiff_t(std::min(t, count - 1)) * stride;
}

// The kernels, once per VNNI encoding (csrc/resample_vnni.h).
#define IPU_VNNI_NS vnni_evex
#define IPU_VNNI_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#define IPU_DPBUSD _mm256_dpbusd_epi32
#include "resample_vnni.h"
#undef IPU_VNNI_NS
#undef IPU_VNNI_TARGET
#undef IPU_DPBUSD
#define IPU_VNNI_NS vnni_vex
#define IPU_VNNI_TARGET __attribute__((target("avx2,avxvnni")))
#define IPU_DPBUSD _mm256_dpbusd_avx_epi32
#include "resample_vnni.h"
#undef IPU_VNNI_NS
#undef IPU_VNNI_TARGET
#undef IPU_DPBUSD

// ---------------------------------------------------------------------------------------------------------------
// x86: the AVX-512 VBMI horizontal pass (Ice Lake and later Xeons, Zen 4 and 5)
//
// The kernels above give each 128-bit lane one output pixel, R G B and an idle X, so a quarter of every multiply is
// wasted and each result needs a repacking to RGB. Here a 32-bit lane is one output BYTE (one channel of one pixel)
// and holds that byte's four taps, so eight lanes are 8 consecutive bytes of the RGB output row, in order:
//  - per block of 8 output bytes (2 2/3 pixels), one 64-byte window of the source row holds every tap they read
//    (vbmi_h_tables checks it, else this kernel is not used);
//  - one vpermi2b per group of 4 taps gathers the 32 tap bytes from the window (any byte to any lane);
//  - three vpdpbusd multiply them by the weights' three signed digits (as the VNNI kernels: exact mod 2^32);
//  - four blocks' int32 results pack to 32 output bytes with packs/packus and one vpermd.
// Per output pixel that is ~3 vector operations per group against ~7 for the AVX2 kernel's three taps.

constexpr int kVbmiWindow = 64;       // bytes of the source row a block's taps may span
constexpr int kVbmiMaxGroups = 4;     // taps a block may read, in groups of 4 (more: the other kernels)
constexpr int kVbmiTableBytes = 128;  // per block and group: 32 gather indices, then 3 x 32 digits
// With at most 2 taps (upscales, scales up to ~1) the AVX2 two-tap kernel is as fast or faster (measured in cache on
// Zen 4: 60 against 66 us at scale 0.8, equal at 1.0; VBMI 10-20% faster from 3 taps on).
constexpr int kVbmiMinTaps = 3;

// Blocks of 8 output bytes in a row of out_w pixels, rounded up to whole 32-byte stores (4 blocks).
inline int vbmi_blocks(int out_w) { return (out_w * 3 + 31) / 32 * 4; }

// The VBMI tables for rows starting at full-image column origin_x: per block of 8 output bytes (out_w * 3 bytes,
// padded to whole 32-byte stores with zero-weight lanes) the window's byte offset in the row (vb_base), and per group
// of 4 taps the lanes' gather indices into the window and their weights' digits (kvb). False when a block's taps span
// more than the window, no pixel has kVbmiMinTaps taps or one has more than kVbmiMaxGroups * 4, or a weight has no
// 3-digit form. *groups gets the groups every block is given; *max_read the bytes read past a row's start (windows
// reach past the last tap).
bool vbmi_h_tables(const Plan& p, ResampleScratch& s, int origin_x, int* groups, ptrdiff_t* max_read) {
  const int ch = p.ch;
  if (p.max_count_x < kVbmiMinTaps || p.max_count_x > kVbmiMaxGroups * 4) return false;
  const int g_all = (p.max_count_x + 3) / 4;
  const int out_bytes = p.out_w * 3;
  const int blocks = vbmi_blocks(p.out_w);
  const int32_t* bx = s.bx.data();
  if (s.vb_base.size() < size_t(blocks)) s.vb_base.resize(size_t(blocks));
  int32_t* base = s.vb_base.data();
  // Each block's window starts at the first column its pixels read (bytes 8b .. 8b + 7 are pixels 8b / 3 ..
  // (8b + 7) / 3); blocks of padding only take the last real block's.
  ptrdiff_t reach = 0;
  for (int b = 0; b < blocks; b++) {
    if (b * 8 >= out_bytes) {
      base[b] = base[b - 1];
      continue;
    }
    const int i0 = b * 8 / 3, i1 = std::min(p.out_w - 1, (b * 8 + 7) / 3);
    int lo = std::numeric_limits<int>::max(), hi = std::numeric_limits<int>::min();
    for (int i = i0; i <= i1; i++) {
      lo = std::min(lo, bx[i * 2]);
      hi = std::max(hi, bx[i * 2] + bx[i * 2 + 1]);
    }
    if ((hi - lo) * ch > kVbmiWindow) return false;
    base[b] = (lo - origin_x) * ch;
    reach = std::max<ptrdiff_t>(reach, ptrdiff_t(base[b]) + kVbmiWindow);
  }
  // Each pixel's digits once, then its R, G and B lanes (taps past its count keep index 0 and zero digits).
  const size_t block_bytes = size_t(g_all) * kVbmiTableBytes;
  if (s.kvb.size() < size_t(blocks) * block_bytes) s.kvb.resize(size_t(blocks) * block_bytes);
  std::memset(s.kvb.data(), 0, size_t(blocks) * block_bytes);
  for (int i = 0; i < p.out_w; i++) {
    const int first = bx[i * 2] - origin_x, count = bx[i * 2 + 1];
    const int32_t* k = &s.kx[size_t(i) * size_t(p.kx_size)];
    int8_t d[kVbmiMaxGroups * 4][3];
    for (int t = 0; t < count; t++)
      if (!weight_digits(k[t], d[t])) return false;
    for (int c = 0; c < 3; c++) {
      const int byte = i * 3 + c;
      int8_t* tab = &s.kvb[size_t(byte >> 3) * block_bytes] + (byte & 7) * 4;
      const int at = first * ch + c - base[byte >> 3];  // in [0, 64 - count * ch]: the window check above
      for (int t = 0; t < count; t++) {
        int8_t* g = tab + (t >> 2) * kVbmiTableBytes + (t & 3);
        g[0] = int8_t(at + t * ch);
        g[32] = d[t][0];
        g[64] = d[t][1];
        g[96] = d[t][2];
      }
    }
  }
  *groups = g_all;
  *max_read = reach;
  return true;
}

#define IPU_VBMI_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// A row (NR rows, row + r * row_step into out + r * out_step, sharing the tables) of the VBMI horizontal pass: 32
// output bytes per iteration, written whole (the rows are padded for it). GFIX > 0 fixes the group count.
template <int GFIX, int NR>
IPU_VBMI_TARGET void h_row_vbmi(const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step,
                                const int32_t* base, const int8_t* tab, int blocks, int groups_rt) {
  const int groups = GFIX > 0 ? GFIX : groups_rt;
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int b = 0; b < blocks; b += 4) {
    prefetch_next_pair<NR>(row, row_step, base[b]);
    __m256i res[NR][4];
    for (int u = 0; u < 4; u++) {
      __m256i lo[NR], hi[NR], s0[NR], s1[NR], s2[NR];
      for (int r = 0; r < NR; r++) {
        const uint8_t* w = row + r * row_step + base[b + u];
        lo[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
        hi[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
        s0[r] = _mm256_set1_epi32(kBias);
        s1[r] = s2[r] = _mm256_setzero_si256();
      }
      const int8_t* t = tab + size_t(b + u) * size_t(groups) * kVbmiTableBytes;
      for (int g = 0; g < groups; g++, t += kVbmiTableBytes) {
        const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t));
        const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 32));
        const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 64));
        const __m256i d2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 96));
        for (int r = 0; r < NR; r++) {
          const __m256i v = _mm256_permutex2var_epi8(lo[r], idx, hi[r]);
          s0[r] = _mm256_dpbusd_epi32(s0[r], v, d0);
          s1[r] = _mm256_dpbusd_epi32(s1[r], v, d1);
          s2[r] = _mm256_dpbusd_epi32(s2[r], v, d2);
        }
      }
      for (int r = 0; r < NR; r++) res[r][u] = vnni_evex::vnni_combine(s0[r], s1[r], s2[r]);
    }
    for (int r = 0; r < NR; r++) {
      // packs/packus per 128-bit lane leave the four blocks' 4-byte halves in the order 0 1 2 3 | 0 1 2 3 (low
      // halves, then high): one vpermd puts each block's 8 bytes together.
      const __m256i pk = _mm256_packus_epi16(_mm256_packs_epi32(res[r][0], res[r][1]),
                                             _mm256_packs_epi32(res[r][2], res[r][3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * out_step + b * 8),
                          _mm256_permutevar8x32_epi32(pk, order));
    }
  }
}

template <class Rows>
void horizontal_vbmi(const ResampleScratch& s, int blocks, int groups, Rows rows) {
  const int32_t* base = s.vb_base.data();
  const int8_t* tab = s.kvb.data();
  auto run = [&](auto gfix) {
    constexpr int G = decltype(gfix)::value;
    rows([&](const uint8_t* row, uint8_t* out) { h_row_vbmi<G, 1>(row, 0, out, 0, base, tab, blocks, groups); },
         [&](const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step) {
           h_row_vbmi<G, 2>(row, row_step, out, out_step, base, tab, blocks, groups);
         });
  };
  with_fixed_groups(groups, run);
}

#undef IPU_VBMI_TARGET

#endif  // IPU_RESAMPLE_X86

// ---------------------------------------------------------------------------------------------------------------
// aarch64: NEON (baseline there). Exact int32 multiply-accumulate with the full 22-bit weights.

#if defined(IPU_RESAMPLE_NEON)

template <int CH>
void h_row_neon(const uint8_t* row, uint8_t* out, const int32_t* off, const int32_t* bx, const int32_t* kx,
                int ksize, int out_w) {
  for (int i = 0; i < out_w; i++) {
    const uint8_t* px = row + off[i];
    const int count = bx[i * 2 + 1];
    const int32_t* k = kx + size_t(i) * size_t(ksize);
    int32x4_t acc = vsetq_lane_s32(0, vdupq_n_s32(kBias), 3);
    int t = 0;
    for (; t + 2 <= count; t += 2) {
      // 2 pixels as RGBX; X (lane 3, bias 0) is multiplied too and then dropped. RGB input is gathered.
      uint8x8_t b;
      if (CH == 4) {
        b = vld1_u8(px + t * 4);
      } else {
        uint8_t tmp8[8] = {px[t * 3], px[t * 3 + 1], px[t * 3 + 2], 0, px[t * 3 + 3], px[t * 3 + 4], px[t * 3 + 5], 0};
        b = vld1_u8(tmp8);
      }
      const uint16x8_t w = vmovl_u8(b);
      acc = vmlaq_n_s32(acc, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))), k[t]);
      acc = vmlaq_n_s32(acc, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(w))), k[t + 1]);
    }
    for (; t < count; t++) {
      const int32_t v[4] = {px[t * CH], px[t * CH + 1], px[t * CH + 2], 0};
      acc = vmlaq_n_s32(acc, vld1q_s32(v), k[t]);
    }
    const int32x4_t sh = vshrq_n_s32(acc, kPrecisionBits);
    const uint8x8_t u8 = vqmovun_s16(vcombine_s16(vqmovn_s32(sh), vdup_n_s16(0)));
    out[i * 3 + 0] = vget_lane_u8(u8, 0);
    out[i * 3 + 1] = vget_lane_u8(u8, 1);
    out[i * 3 + 2] = vget_lane_u8(u8, 2);
  }
}

void vertical_neon(const Plan& p, const ResampleScratch& s, const VertIO io) {
  const int nbytes = io.nbytes;
  const ptrdiff_t stride = io.src_stride;
  for (int yy = 0; yy < p.out_h; yy++) {
    const uint8_t* base = v_base(io, s, yy);
    const int count = s.by[size_t(yy) * 2 + 1];
    const int32_t* k = &s.ky[size_t(yy) * size_t(p.ky_size)];
    uint8_t* out = io.dst + yy * io.dst_stride;
    for (int b = 0; b < nbytes; b += 16) {
      if (b + 16 > nbytes && !v_block_readable(io, base, count, b, 16)) {
        v_bytes_scalar(base, stride, k, count, b, nbytes, out);
        break;
      }
      int32x4_t a0 = vdupq_n_s32(kBias), a1 = a0, a2 = a0, a3 = a0;
      for (int t = 0; t < count; t++) {
        const uint8x16_t v = vld1q_u8(base + t * stride + b);
        const uint16x8_t l = vmovl_u8(vget_low_u8(v)), h = vmovl_u8(vget_high_u8(v));
        a0 = vmlaq_n_s32(a0, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(l))), k[t]);
        a1 = vmlaq_n_s32(a1, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(l))), k[t]);
        a2 = vmlaq_n_s32(a2, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h))), k[t]);
        a3 = vmlaq_n_s32(a3, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(h))), k[t]);
      }
      const int16x8_t lo16 = vcombine_s16(vqmovn_s32(vshrq_n_s32(a0, kPrecisionBits)),
                                          vqmovn_s32(vshrq_n_s32(a1, kPrecisionBits)));
      const int16x8_t hi16 = vcombine_s16(vqmovn_s32(vshrq_n_s32(a2, kPrecisionBits)),
                                          vqmovn_s32(vshrq_n_s32(a3, kPrecisionBits)));
      const uint8x16_t r = vcombine_u8(vqmovun_s16(lo16), vqmovun_s16(hi16));
      if (b + 16 <= nbytes || io.dst_padded) {
        vst1q_u8(out + b, r);
      } else {
        uint8_t last[16];
        vst1q_u8(last, r);
        std::memcpy(out + b, last, size_t(nbytes - b));
      }
    }
  }
}

#endif  // IPU_RESAMPLE_NEON

// ---------------------------------------------------------------------------------------------------------------
// Dispatch

enum class Isa { Scalar, Sse41, Avx2, AvxVnni, Avx512Vnni, Avx512Vbmi, Neon };

// Every path, widest first (AVX-512 VNNI before AVX-VNNI: the same kernels, and either is there when both are;
// "avx512vbmi" is AVX-512 VNNI with the VBMI horizontal pass, which Cascade Lake's AVX-512 lacks).
constexpr Isa kPaths[] = {Isa::Avx512Vbmi, Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2,
                          Isa::Sse41,      Isa::Neon,       Isa::Scalar};

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512Vbmi: return "avx512vbmi";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::AvxVnni: return "avxvnni";
    case Isa::Avx2: return "avx2";
    case Isa::Sse41: return "sse4.1";
    case Isa::Neon: return "neon";
    default: return "scalar";
  }
}

// Whether this CPU runs `isa`'s kernels.
bool cpu_has(Isa isa) {
#if defined(IPU_RESAMPLE_X86)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Avx512Vbmi:
      return cpu_has(Isa::Avx512Vnni) && __builtin_cpu_supports("avx512vbmi");
    case Isa::Avx512Vnni:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
    case Isa::AvxVnni: {  // CPUID leaf 7 subleaf 1, EAX bit 4 (not every compiler's __builtin_cpu_supports knows it)
      unsigned a = 0, b = 0, c = 0, d = 0;
      return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1u);
    }
    case Isa::Avx2: return __builtin_cpu_supports("avx2");
    case Isa::Sse41: return __builtin_cpu_supports("sse4.1");
    case Isa::Scalar: return true;
    default: return false;
  }
#elif defined(IPU_RESAMPLE_NEON)
  return isa == Isa::Neon || isa == Isa::Scalar;
#else
  return isa == Isa::Scalar;
#endif
}

// The widest path this CPU runs, or the one IPU_CNN_RESAMPLE_ISA names when the CPU runs it.
Isa detect_isa() {
  Isa best = Isa::Scalar;
  for (Isa isa : kPaths) {
    if (cpu_has(isa)) {
      best = isa;
      break;
    }
  }
  if (const char* want = std::getenv("IPU_CNN_RESAMPLE_ISA")) {
    for (Isa isa : kPaths)
      if (!std::strcmp(want, isa_name(isa)) && cpu_has(isa)) best = isa;
  }
  return best;
}

Isa chosen_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

// The x86 paths built on AVX2 (every one but SSE4.1): their kernels, and the coefficient code, use AVX2.
inline bool uses_avx2(Isa isa) {
  return isa == Isa::Avx2 || isa == Isa::AvxVnni || isa == Isa::Avx512Vnni || isa == Isa::Avx512Vbmi;
}

bool coefficients_in_avx2() { return uses_avx2(chosen_isa()); }

// The two passes in the plan's order through the x86 kernels: horizontal(rows) runs a row kernel over the rows
// `rows` hands out, vertical(io) a vertical pass. The horizontal pass reads up to max_read bytes from the start of a
// row (the vector loads of its last group) and writes out_write bytes of each output row (its whole-vector stores).
#if defined(IPU_RESAMPLE_X86)
template <class Horizontal, class Vertical>
void run_passes_x86(const Plan& p, ResampleScratch& s, uint8_t* dst, ptrdiff_t dst_stride, ptrdiff_t max_read,
                    ptrdiff_t out_write, Horizontal horizontal, Vertical vertical) {
  if (!p.vertical_first) {
    const ptrdiff_t tmp_stride = fast_tmp_stride(p.out_w);
    uint8_t* tmp = fast_tmp(p, s, tmp_stride, max_read);
    horizontal([&](auto&& row_fn, auto&& pair_fn) {
      for_each_source_row(p, tmp, tmp_stride, max_read, row_fn, pair_fn);
    });
    vertical(vertical_io_second(p, tmp, tmp_stride, dst, dst_stride));
  } else {
    const VFirstTmp t = fast_tmp_vfirst(p, s, max_read, out_write);
    vertical(vertical_io_first(p, t.rows, t.stride, true));
    horizontal([&](auto&& row_fn, auto&&) { for_each_vfirst_row(p, t, dst, dst_stride, out_write, row_fn); });
  }
}
#endif

bool run_fast(Isa isa, const Plan& p, ResampleScratch& s, uint8_t* dst, ptrdiff_t dst_stride) {
  const bool vf = p.vertical_first;
  const int origin_x = vf ? p.xbox_first : p.wx0;  // the column a horizontal input row starts at
#if defined(IPU_RESAMPLE_X86)
  if (isa == Isa::Sse41 || uses_avx2(isa)) {
    // VNNI needs every weight in three byte digits (always so for normalised weights; otherwise AVX2 throughout).
    const bool evex = isa == Isa::Avx512Vbmi || isa == Isa::Avx512Vnni, avx2 = uses_avx2(isa);
    const bool vnni = (evex || isa == Isa::AvxVnni) && vnni_v_weights(p, s);
    // The VBMI horizontal pass where its tables apply (every block's taps within its window).
    int vb_groups = 0;
    ptrdiff_t max_read = 0;
    const bool vbmi_h = isa == Isa::Avx512Vbmi && vnni && vbmi_h_tables(p, s, origin_x, &vb_groups, &max_read);
    const int w4 = (p.out_w + 3) & ~3;
    const int vb_blocks = vbmi_blocks(p.out_w);
    // The row kernels' stores: whole 32-byte blocks (VBMI), else 16 bytes for each 4 pixels.
    const ptrdiff_t out_write = vbmi_h ? ptrdiff_t(vb_blocks) * 8 : ptrdiff_t(w4) * 3 + 4;
    const int32_t* off = nullptr;
    int groups = 0;
    bool vnni_h = false;
    if (!vbmi_h) {
      off = fast_offsets(p, s, origin_x);
      ptrdiff_t max_off = 0;
      for (int i = 0; i < w4; i++) max_off = std::max<ptrdiff_t>(max_off, off[i]);
      const int taps = isa == Isa::Sse41 ? 2 : 4;
      groups = (p.max_count_x + taps - 1) / taps;
      const ptrdiff_t load = isa == Isa::Sse41 ? 8 : 16;
      max_read = max_off + ptrdiff_t(groups - 1) * taps * p.ch + load;
      // VNNI runs the horizontal pass only when some output pixel reads kVnniMinTaps or more source pixels, and the
      // vertical pass takes its rows by vnni_takes; the rest is the AVX2 kernels'.
      vnni_h = vnni && p.max_count_x >= kVnniMinTaps && vnni_h_weights(p, s, groups);
      if (!vnni_h) fast_split_weights(p, s, groups, avx2);
    }
    run_passes_x86(
        p, s, dst, dst_stride, max_read, out_write,
        [&](auto rows) {
          if (vbmi_h)
            horizontal_vbmi(s, vb_blocks, vb_groups, rows);
          else if (vnni_h && evex)
            p.ch == 4 ? vnni_evex::horizontal_vnni<4>(p, s, off, groups, rows)
                      : vnni_evex::horizontal_vnni<3>(p, s, off, groups, rows);
          else if (vnni_h)
            p.ch == 4 ? vnni_vex::horizontal_vnni<4>(p, s, off, groups, rows)
                      : vnni_vex::horizontal_vnni<3>(p, s, off, groups, rows);
          else if (avx2)
            p.ch == 4 ? horizontal_avx2<4>(p, s, off, groups, rows) : horizontal_avx2<3>(p, s, off, groups, rows);
          else
            p.ch == 4 ? horizontal_sse41<4>(p, s, off, groups, rows) : horizontal_sse41<3>(p, s, off, groups, rows);
        },
        [&](const VertIO& io) {
          if (vnni && evex)
            vnni_evex::vertical_vnni(p, s, io);
          else if (vnni)
            vnni_vex::vertical_vnni(p, s, io);
          else if (avx2)
            vertical_avx2(p, s, io);
          else
            vertical_sse41(p, s, io);
        });
    return true;
  }
#elif defined(IPU_RESAMPLE_NEON)
  if (isa == Isa::Neon) {
    const int32_t* off = fast_offsets(p, s, origin_x);
    auto row_fn = [&](const uint8_t* row, uint8_t* out) {
      if (p.ch == 4)
        h_row_neon<4>(row, out, off, s.bx.data(), s.kx.data(), p.kx_size, p.out_w);
      else
        h_row_neon<3>(row, out, off, s.bx.data(), s.kx.data(), p.kx_size, p.out_w);
    };
    // The NEON row kernel reads only the taps' own pixels and writes only out_w * 3 bytes: no bounce rows.
    if (!vf) {
      const ptrdiff_t tmp_stride = fast_tmp_stride(p.out_w);
      const ptrdiff_t max_read = ptrdiff_t(p.ww) * p.ch;
      uint8_t* tmp = fast_tmp(p, s, tmp_stride, max_read);
      for_each_source_row(p, tmp, tmp_stride, max_read, row_fn,
                          [&](const uint8_t* row, ptrdiff_t row_step, uint8_t* out, ptrdiff_t out_step) {
                            row_fn(row, out);
                            row_fn(row + row_step, out + out_step);
                          });
      vertical_neon(p, s, vertical_io_second(p, tmp, tmp_stride, dst, dst_stride));
    } else {
      const VFirstTmp t = fast_tmp_vfirst(p, s, 0, 0);
      vertical_neon(p, s, vertical_io_first(p, t.rows, t.stride, true));
      for (int yy = 0; yy < p.out_h; yy++) row_fn(t.rows + yy * t.stride, dst + yy * dst_stride);
    }
    return true;
  }
#endif
  (void)isa;
  (void)p;
  (void)s;
  (void)dst;
  (void)dst_stride;
  (void)vf;
  (void)origin_x;
  return false;
}

bool run_scalar(const Plan& p, ResampleScratch& s, uint8_t* dst, ptrdiff_t dst_stride) {
  if (!p.vertical_first) {
    const ptrdiff_t tmp_stride = ptrdiff_t(p.out_w) * 3;
    const size_t need = size_t(p.ybox_last - p.ybox_first) * size_t(tmp_stride);
    if (s.tmp.size() < need) s.tmp.resize(need);
    uint8_t* tmp = s.tmp.data();
    for (int y = p.ybox_first; y < p.ybox_last; y++)
      h_row_scalar(p, s, p.data + (y - p.wy0) * p.stride, p.wx0, tmp + (y - p.ybox_first) * tmp_stride);
    vertical_scalar(p, s, vertical_io_second(p, tmp, tmp_stride, dst, dst_stride));
  } else {
    const ptrdiff_t tmp_stride = ptrdiff_t(p.xbox_last - p.xbox_first) * p.ch;
    const size_t need = size_t(p.out_h) * size_t(tmp_stride);
    if (s.tmp.size() < need) s.tmp.resize(need);
    uint8_t* tmp = s.tmp.data();
    vertical_scalar(p, s, vertical_io_first(p, tmp, tmp_stride, false));
    for (int yy = 0; yy < p.out_h; yy++) h_row_scalar(p, s, tmp + yy * tmp_stride, p.xbox_first, dst + yy * dst_stride);
  }
  return true;
}


}  // namespace

void resample_support(int full_width, int full_height, const double box_in[4], int out_w, int out_h, Filter filter,
                      int* x_lo, int* x_hi, int* y_lo, int* y_hi, const OutputWindow& window) {
  *x_lo = *x_hi = *y_lo = *y_hi = 0;
  double box[4];
  OutputWindow w;
  if (!normalise_box(full_width, full_height, box_in, out_w, out_h, box) || !resolve_window(window, out_w, out_h, &w))
    return;
  const double support = filter == Filter::Bicubic ? BicubicFilter::support : BilinearFilter::support;
  const AxisGeometry gx = axis_geometry(box[0], box[2], w.grid_w, support);
  const AxisGeometry gy = axis_geometry(box[1], box[3], w.grid_h, support);
  // Bounds are monotonic in the output index, but take the union anyway: it is cheap.
  int lo = std::numeric_limits<int>::max(), hi = 0;
  for (int xx = 0; xx < out_w; xx++) {
    double c;
    int xmin, count;
    axis_bounds(gx, full_width, box[0], w.off_x + xx, &c, &xmin, &count);
    lo = std::min(lo, xmin);
    hi = std::max(hi, xmin + count);
  }
  *x_lo = lo;
  *x_hi = hi;
  lo = std::numeric_limits<int>::max(), hi = 0;
  for (int yy = 0; yy < out_h; yy++) {
    double c;
    int ymin, count;
    axis_bounds(gy, full_height, box[1], w.off_y + yy, &c, &ymin, &count);
    lo = std::min(lo, ymin);
    hi = std::max(hi, ymin + count);
  }
  *y_lo = lo;
  *y_hi = hi;
}

bool resize_box_scalar(const Region& src, const double box[4], int out_w, int out_h, Filter filter, bool flip,
                       uint8_t* dst, int dst_stride, ResampleScratch& scratch, const OutputWindow& window) {
  Plan p;
  if (!make_plan(src, box, out_w, out_h, window, filter, flip, dst, dst_stride, scratch, &p)) return false;
  return run_scalar(p, scratch, dst, dst_stride);
}

bool resize_box(const Region& src, const double box[4], int out_w, int out_h, Filter filter, bool flip, uint8_t* dst,
                int dst_stride, ResampleScratch& scratch, const OutputWindow& window) {
  Plan p;
  if (!make_plan(src, box, out_w, out_h, window, filter, flip, dst, dst_stride, scratch, &p)) return false;
  const Isa isa = chosen_isa();
  if (isa != Isa::Scalar && run_fast(isa, p, scratch, dst, dst_stride)) return true;
  return run_scalar(p, scratch, dst, dst_stride);
}

const char* resample_simd_path() { return isa_name(chosen_isa()); }

std::vector<std::string> resample_simd_paths() {
  std::vector<std::string> names;
  for (Isa isa : kPaths)
    if (cpu_has(isa)) names.emplace_back(isa_name(isa));
  return names;
}

bool resample_vertical_first(int full_width, int full_height, int out_w, int out_h) {
  return vertical_first_rule(full_width, full_height, out_w, out_h);
}

}  // namespace ipu
