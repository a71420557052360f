#include "transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ipu {

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

namespace {

// Columns decoded beyond the filter support on each side. jpeg_crop_scanline makes the column window the upsampler's
// whole row, so fancy (triangle) chroma upsampling replicates at the window's edges where the whole decode reads the
// neighbouring chroma: the window's outermost pixel differs from the whole decode's (1 px suffices; 0 fails). Rows
// need no margin: every row jpeg_read_scanlines returns after jpeg_skip_scanlines is the whole decode's (libjpeg
// keeps the context rows of vertical upsampling itself), and stopping early changes no row above. A 4-row margin cost
// 1.5% of the instructions (an extra iMCU row above or below the region in about one region in four).
// test_dct_scaled_region_equals_the_scaled_frame pins both.
constexpr int kColumnMargin = 4;

// A sample's geometry on a width x height source: its crop and output size. Empty when the output window fits in the
// resized frame, else why not (an eval crop larger than the resized image, which torchvision's CenterCrop would pad).
struct Geometry {
  Crop crop;
  int out_w, out_h;
};

std::string sample_geometry(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index,
                            Geometry* g) {
  g->crop = sample_crop(p, width, height, seed, epoch, index);
  g->out_w = p.out_w;
  g->out_h = p.out_h;
  if (p.mode == CropMode::None && (width != p.out_w || height != p.out_h)) {
    // the whole image, unresized: the caller's buffer was sized from out_w x out_h, so the image must be exactly that
    return "crop mode 0 (the whole image) needs an output of the image's size " + std::to_string(width) + "x" +
           std::to_string(height) + ", got " + std::to_string(p.out_w) + "x" + std::to_string(p.out_h);
  }
  const Crop& cr = g->crop;
  if (cr.off_x < 0 || cr.off_y < 0 || int64_t(cr.off_x) + g->out_w > cr.grid_w ||
      int64_t(cr.off_y) + g->out_h > cr.grid_h) {
    return "the " + std::to_string(g->out_w) + "x" + std::to_string(g->out_h) +
           " centre crop does not fit in the image resized to " + std::to_string(cr.grid_w) + "x" +
           std::to_string(cr.grid_h) + " (torchvision's CenterCrop would pad it; not supported)";
  }
  return "";
}

// Smallest of the fast DCT scales (1/8, 1/4, 1/2, 1) that keeps the crop's box at least the output size.
int choose_scale(const Geometry& g, bool dct_scaling) {
  if (!dct_scaling) return 8;
  const double bw = g.crop.box[2] - g.crop.box[0], bh = g.crop.box[3] - g.crop.box[1];
  for (int cand : {1, 2, 4}) {
    if (bw * cand / 8.0 >= g.out_w && bh * cand / 8.0 >= g.out_h) return cand;
  }
  return 8;
}

// A crop's frame in an image decoded at DCT scale m/8 (SW x SH): the frame's pixels [x0, x0 + w) x [y0, y0 + h), the
// box to resize in the frame's coordinates, and the output window. At full scale (m = 8) the frame is exact and the
// box is all of it, so the resize is Pillow's on the cropped frame (torchvision's geometry, bit for bit). At smaller
// scales the frame's edges fall between scaled pixels: the frame is widened to whole pixels and the box keeps the
// fractional edges, so the filter still stops (within one scaled pixel) where torchvision's stops.
struct ScaledFrame {
  int x0, y0, w, h;
  double box[4];
  OutputWindow window;
};

ScaledFrame scale_frame(const Crop& cr, int m, int SW, int SH) {
  const double f = m / 8.0;  // exact: the products below are exact too
  ScaledFrame s;
  const int x1 = std::min(SW, int(std::ceil(cr.frame[2] * f))), y1 = std::min(SH, int(std::ceil(cr.frame[3] * f)));
  s.x0 = std::min(int(std::floor(cr.frame[0] * f)), x1 - 1);
  s.y0 = std::min(int(std::floor(cr.frame[1] * f)), y1 - 1);
  s.w = x1 - s.x0;
  s.h = y1 - s.y0;
  s.box[0] = cr.frame[0] * f - s.x0;
  s.box[1] = cr.frame[1] * f - s.y0;
  s.box[2] = std::min(cr.frame[2] * f - s.x0, double(s.w));
  s.box[3] = std::min(cr.frame[3] * f - s.y0, double(s.h));
  s.window = OutputWindow{cr.grid_w, cr.grid_h, cr.off_x, cr.off_y};
  return s;
}

// Resize + flip the part of the frame that `pixels` holds (columns [px0, px1), rows [py0, py1) of the scaled image,
// `channels` bytes a pixel, row stride `stride`) into dst. False when that part does not cover the resampler's support.
bool resize_frame(const Geometry& g, const ScaledFrame& fr, const uint8_t* pixels, int stride, int channels, int px0,
                  int py0, int px1, int py1, Filter filter, uint8_t* dst, ResampleScratch& scratch) {
  // The held window, cut to the frame and seen in the frame's coordinates.
  const int wx0 = std::max(px0, fr.x0), wx1 = std::min(px1, fr.x0 + fr.w);
  const int wy0 = std::max(py0, fr.y0), wy1 = std::min(py1, fr.y0 + fr.h);
  if (wx1 <= wx0 || wy1 <= wy0) return false;
  const Region reg{pixels + size_t(wy0 - py0) * size_t(stride) + size_t(wx0 - px0) * size_t(channels), stride,
                   channels, wx0 - fr.x0, wy0 - fr.y0, wx1 - wx0, wy1 - wy0, fr.w, fr.h};
  return resize_box(reg, fr.box, g.out_w, g.out_h, filter, g.crop.flip, dst, g.out_w * 3, scratch, fr.window);
}

}  // namespace

std::string transform_pixels(const uint8_t* pixels, int width, int height, int channels, const CropParams& crop,
                             Filter filter, uint64_t seed, uint64_t epoch, uint64_t index, uint8_t* dst,
                             ResampleScratch& scratch) {
  Geometry g;
  std::string bad = sample_geometry(crop, width, height, seed, epoch, index, &g);
  if (!bad.empty()) return bad;
  const ScaledFrame fr = scale_frame(g.crop, 8, width, height);
  if (!resize_frame(g, fr, pixels, width * channels, channels, 0, 0, width, height, filter, dst, scratch)) {
    return "resize failed";
  }
  return "";
}

namespace {

// The width x height window at (x0, y0) of the image (pixels outside it read as zero), mirrored when flip, as RGB at
// dst (row stride width * 3).
void copy_padded(const uint8_t* pixels, int width, int height, int channels, int x0, int y0, bool flip, uint8_t* dst) {
  for (int y = 0; y < height; ++y) {
    uint8_t* row = dst + size_t(y) * size_t(width) * 3;
    const int sy = y0 + y;
    if (sy < 0 || sy >= height) {
      std::memset(row, 0, size_t(width) * 3);
      continue;
    }
    const uint8_t* src = pixels + size_t(sy) * size_t(width) * size_t(channels);
    for (int x = 0; x < width; ++x) {
      const int sx = x0 + (flip ? width - 1 - x : x);
      uint8_t* d = row + size_t(x) * 3;
      if (sx < 0 || sx >= width) {
        d[0] = d[1] = d[2] = 0;
      } else {
        const uint8_t* q = src + size_t(sx) * size_t(channels);
        d[0] = q[0];
        d[1] = q[1];
        d[2] = q[2];
      }
    }
  }
}

}  // namespace

std::string transform_raw(const uint8_t* pixels, int width, int height, int channels, const CropParams& crop,
                          Filter filter, uint64_t seed, uint64_t epoch, uint64_t index, uint8_t* dst,
                          ResampleScratch& scratch, std::vector<uint8_t>& pad_buf) {
  if (crop.mode == CropMode::Eval && crop.out_w == width && crop.out_h == height) {
    // An eval "resize" of the image to its own size (CIFAR at 32 px) is the identity: copied, not resampled.
    const Crop c = sample_crop(crop, width, height, seed, epoch, index);
    if (c.grid_w == width && c.grid_h == height && c.off_x == 0 && c.off_y == 0) {
      copy_padded(pixels, width, height, channels, 0, 0, false, dst);
      return "";
    }
  }
  if (crop.mode != CropMode::PadCrop) {
    return transform_pixels(pixels, width, height, channels, crop, filter, seed, epoch, index, dst, scratch);
  }
  const Crop c = sample_crop(crop, width, height, seed, epoch, index);
  if (crop.out_w == width && crop.out_h == height) {
    copy_padded(pixels, width, height, channels, c.frame[0], c.frame[1], c.flip, dst);
    return "";
  }
  // Crop first, then resize the crop whole (flipped in the resize), as torchvision's RandomCrop then Resize.
  pad_buf.resize(size_t(width) * size_t(height) * 3);
  copy_padded(pixels, width, height, channels, c.frame[0], c.frame[1], false, pad_buf.data());
  const Region reg{pad_buf.data(), width * 3, 3, 0, 0, width, height, width, height};
  const double box[4] = {0.0, 0.0, double(width), double(height)};
  if (!resize_box(reg, box, crop.out_w, crop.out_h, filter, c.flip, dst, crop.out_w * 3, scratch)) {
    return "resize failed";
  }
  return "";
}

DecodeReport transform_jpeg(Workspace& ws, const uint8_t* data, size_t size, const CropParams& crop, Filter filter,
                            uint64_t seed, uint64_t epoch, uint64_t index, const DecodeOptions& opts, uint8_t* dst) {
  JpegInfo info;
  DecodeReport r = ws.decoder.open(data, size, opts, &info);
  if (r.status != Status::Ok) return r;

  if (info.orientation != 1) {
    // Rare (photos from phones, when asked): orient the full frame, then crop it like any decoded image.
    ws.decoder.abort();
    int w = 0, h = 0;
    r = ws.decoder.decode_full(data, size, opts, &ws.full, &w, &h);
    if (r.status != Status::Ok) return r;
    std::string bad = transform_pixels(ws.full.data(), w, h, 3, crop, filter, seed, epoch, index, dst, ws.scratch);
    if (!bad.empty()) {
      r.status = Status::Error;
      r.message = bad;
    }
    return r;
  }

  const int W = info.width, H = info.height;
  Geometry g;
  std::string bad = sample_geometry(crop, W, H, seed, epoch, index, &g);
  if (!bad.empty()) {
    ws.decoder.abort();
    r.status = Status::Error;
    r.message = bad;
    return r;
  }
  const int m = choose_scale(g, opts.dct_scaling);
  const int SW = int((int64_t(W) * m + 7) / 8), SH = int((int64_t(H) * m + 7) / 8);
  const ScaledFrame fr = scale_frame(g.crop, m, SW, SH);
  int x_lo, x_hi, y_lo, y_hi;
  resample_support(fr.w, fr.h, fr.box, g.out_w, g.out_h, filter, &x_lo, &x_hi, &y_lo, &y_hi, fr.window);
  // The column margin reaches past the frame on purpose: it is there for the decoder, the resampler reads inside the
  // frame.
  x_lo = std::max(0, x_lo + fr.x0 - kColumnMargin);
  y_lo += fr.y0;
  x_hi = std::min(SW, x_hi + fr.x0 + kColumnMargin);
  y_hi += fr.y0;

  DecodedRegion got;
  r = ws.decoder.decode_region(data, size, m, x_lo, y_lo, x_hi, y_hi, &ws.region, &got);
  if (r.status != Status::Ok || opts.decode_only) return r;
  if (!resize_frame(g, fr, got.pixels, got.stride, 4, got.x0, got.y0, got.x0 + got.w, got.y0 + got.h, filter, dst,
                    ws.scratch)) {
    r.status = Status::Error;
    r.message = "internal error: decoded region does not cover the resampling support";
  }
  return r;
}

}  // namespace ipu
