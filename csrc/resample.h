// Antialiased resampling with Pillow's semantics (Resample.c): separable, one pass into a uint8 intermediate,
// then the other, in the order Pillow >= 13 picks (resample_vertical_first); triangle (BILINEAR) or cubic a=-0.5
// (BICUBIC) filters stretched by the downscale factor; weights normalised per output pixel and turned into fixed
// point. The crop box (fractional, source pixels) and an optional horizontal flip are fused into the resize.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipu {

enum class Filter : int { Bilinear = 0, Bicubic = 1 };

// A view of decoded pixels: a window [x0, x0 + width) x [y0, y0 + height) of a larger image of
// full_width x full_height. Pixel (x, y) of the full image (inside the window) is at
// data + (y - y0) * stride + (x - x0) * channels. channels is 3 (RGB) or 4 (RGBX, X ignored).
struct Region {
  const uint8_t* data;
  int stride;        // bytes between rows
  int channels;      // 3 or 4
  int x0, y0;        // window origin in full-image coordinates
  int width, height; // window size
  int full_width, full_height;
};

// The output as a window of a larger resize: `box` is resized to grid_w x grid_h and only the out_w x out_h pixels at
// (off_x, off_y) of that grid are computed, each exactly as the whole resize computes it (Pillow's coefficients for
// grid position off + i, the pass order Pillow picks for the grid), so a resize followed by a crop fuses into one
// call bit for bit (torchvision's Resize + CenterCrop). A grid of 0 x 0 is the output itself (no window).
struct OutputWindow {
  int grid_w = 0, grid_h = 0;
  int off_x = 0, off_y = 0;
};

// Which full-image pixels resizing `box` to out_w x out_h reads: [*x_lo, *x_hi) x [*y_lo, *y_hi),
// already clamped to the image. A Region passed to resize_box must cover at least this.
void resample_support(int full_width, int full_height, const double box[4], int out_w, int out_h, Filter filter,
                      int* x_lo, int* x_hi, int* y_lo, int* y_hi, const OutputWindow& window = OutputWindow());

// One axis's coefficients (bounds and fixed-point weights) with everything they are computed from, so that a resize
// of the same geometry (eval images of one size share both axes) copies them instead of computing them again.
struct AxisCoefficients {
  int in_size = -1, out_size = 0, grid_size = 0, offset = 0, filter = -1;
  bool reverse = false;
  double in0 = 0.0, in1 = 0.0;
  int ksize = 0, lo = 0, hi = 0, max_count = 0;
  std::vector<int32_t> bounds, weights;
};

// Per-thread reusable memory (coefficients and the intermediate image); grows, never shrinks.
struct ResampleScratch {
  std::vector<int32_t> kx, ky;
  std::vector<int32_t> bx, by;
  std::vector<uint8_t> tmp;
  std::vector<int16_t> kx16;
  std::vector<int8_t> kx8;   // horizontal weights as three signed byte digits (the VNNI paths)
  std::vector<int32_t> ky4;  // vertical weights likewise, four taps' digits to an int32
  std::vector<int8_t> kvb;      // horizontal gather indices and digits of the AVX-512 VBMI path, per 8 output bytes
  std::vector<int32_t> vb_base; // where each 8 output bytes' 64-byte source window starts
  static constexpr int kCachedAxes = 8;  // the last geometries met (both axes), replaced oldest first
  AxisCoefficients cached[kCachedAxes];
  int cache_next = 0;
};

// Whether resizing a full_width x full_height image (any box) to out_w x out_h runs the vertical pass first:
// Pillow >= 13 (python-pillow/Pillow#9549) does so iff H > out_h and H - out_h > 2 * (W - out_w), with the FULL
// image's W x H (not the box), a strict inequality, and upscales' negative differences taken as they are.
// Older Pillow always runs the horizontal pass first; the two orders differ (the intermediate is clamped to uint8
// between the passes), BICUBIC by tens of levels on noise (26 seen), BILINEAR by 1.
bool resample_vertical_first(int full_width, int full_height, int out_w, int out_h);

// Resize box = (left, top, right, bottom) in full-image coordinates to out_w x out_h RGB, written at dst
// (row stride dst_stride bytes, 3 bytes per pixel; nothing else of dst is written). flip mirrors the output
// left-right. The passes run in Pillow 13's order for the Region's full_width x full_height and the grid
// (resample_vertical_first), so the result equals Pillow 13's Image.resize(grid, box=box) on that image, cropped to
// the window (the whole of it without one).
// Coefficients are computed in full-image coordinates exactly as Pillow does, so the result does not
// depend on where the window starts. Returns false (writing nothing) if the window does not cover
// resample_support(...).
bool resize_box(const Region& src, const double box[4], int out_w, int out_h, Filter filter, bool flip, uint8_t* dst,
                int dst_stride, ResampleScratch& scratch, const OutputWindow& window = OutputWindow());

// Plain scalar implementation (bit-exact with Pillow), kept for tests and as the fallback.
bool resize_box_scalar(const Region& src, const double box[4], int out_w, int out_h, Filter filter, bool flip,
                       uint8_t* dst, int dst_stride, ResampleScratch& scratch,
                       const OutputWindow& window = OutputWindow());

// Name of the instruction set the fast path dispatches to on this CPU ("avx512vbmi", "avx512vnni", "avxvnni", "avx2",
// "sse4.1", "neon", "scalar").
const char* resample_simd_path();

// Every path this CPU runs, widest first ("scalar" last); IPU_CNN_RESAMPLE_ISA may name any of them.
std::vector<std::string> resample_simd_paths();

}  // namespace ipu
