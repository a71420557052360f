#include "crop.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ipu {
namespace {

// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

}  // namespace

CounterRng::CounterRng(uint64_t seed, uint64_t epoch, uint64_t index) {
  key_ = mix64(mix64(mix64(seed + kGolden) ^ (epoch + 0x632be59bd9b4e019ULL)) ^ (index + 0x8cb92ba72f3d8dd7ULL));
}

uint64_t CounterRng::next_u64() { return mix64(key_ + kGolden * (++counter_)); }

double CounterRng::uniform(double lo, double hi) {
  const double u = static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);  // 53 bits, [0, 1)
  return lo + (hi - lo) * u;
}

int64_t CounterRng::randint(int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  if (span <= 1) return lo;
  // Lemire's multiply-shift with rejection: unbiased.
  const uint64_t threshold = (0 - span) % span;
  for (;;) {
    const uint64_t x = next_u64();
    const unsigned __int128 m = static_cast<unsigned __int128>(x) * span;
    if (static_cast<uint64_t>(m) >= threshold) return lo + static_cast<int64_t>(m >> 64);
  }
}

namespace {

// The crop covering the integer rectangle [x0, x1) x [y0, y1) of the source, resized whole to the output.
Crop box_crop(int64_t x0, int64_t y0, int64_t x1, int64_t y1, int out_w, int out_h) {
  Crop c{{int(x0), int(y0), int(x1), int(y1)}, out_w, out_h, 0, 0,
         {double(x0), double(y0), double(x1), double(y1)}, false};
  return c;
}

// torchvision Resize(resize) + CenterCrop((out_h, out_w)) on a width x height image, with torchvision's integer
// arithmetic (transforms/functional.py: _compute_resized_output_size and center_crop): the longer side is
// int(short_target * long / short) (a correctly rounded double quotient of exact integers, then truncated, the same
// in C++ as in Python), and the offsets are int(round((resized - crop) / 2.0)) with Python's round (half to even =
// nearbyint in the default rounding mode).
Crop eval_crop(const CropParams& p, int width, int height) {
  int64_t gw, gh;
  if (p.resize_w > 0 && p.resize_h > 0) {
    gw = p.resize_w;
    gh = p.resize_h;
  } else {
    const bool w_short = width <= height;
    const int64_t shorter = w_short ? width : height, longer = w_short ? height : width;
    const int64_t target = p.resize_short;
    // Clamped only so that absurd targets stay representable; the resampler refuses grids that large.
    const int64_t long_target = std::min<int64_t>(static_cast<int64_t>(double(target * longer) / double(shorter)),
                                                  std::numeric_limits<int>::max());
    gw = w_short ? target : long_target;
    gh = w_short ? long_target : target;
  }
  Crop c = box_crop(0, 0, width, height, p.out_w, p.out_h);
  c.grid_w = int(gw);
  c.grid_h = int(gh);
  c.off_x = int(std::nearbyint((gw - p.out_w) / 2.0));
  c.off_y = int(std::nearbyint((gh - p.out_h) / 2.0));
  c.box[0] = double(int64_t(c.off_x) * width) / double(gw);
  c.box[1] = double(int64_t(c.off_y) * height) / double(gh);
  c.box[2] = double(int64_t(c.off_x + p.out_w) * width) / double(gw);
  c.box[3] = double(int64_t(c.off_y + p.out_h) * height) / double(gh);
  return c;
}

}  // namespace

Crop sample_crop(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index) {
  if (p.mode == CropMode::Eval) return eval_crop(p, width, height);
  if (p.mode != CropMode::Train) return box_crop(0, 0, width, height, width, height);

  // torchvision.transforms.RandomResizedCrop.get_params, with Python's round (half to even = nearbyint).
  CounterRng rng(seed, epoch, index);
  const double area = double(width) * double(height);
  const double log_lo = std::log(p.ratio_lo), log_hi = std::log(p.ratio_hi);
  bool found = false;
  int64_t i = 0, j = 0, w = 0, h = 0;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target_area = area * rng.uniform(p.scale_lo, p.scale_hi);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    // Compared as doubles before any cast: an extreme ratio makes them far larger than an int64 holds.
    const double wd = std::nearbyint(std::sqrt(target_area * aspect));
    const double hd = std::nearbyint(std::sqrt(target_area / aspect));
    if (wd > 0 && wd <= width && hd > 0 && hd <= height) {
      w = static_cast<int64_t>(wd);
      h = static_cast<int64_t>(hd);
      i = rng.randint(0, height - h + 1);
      j = rng.randint(0, width - w + 1);
      found = true;
    }
  }
  if (!found) {  // centre fallback
    const double in_ratio = double(width) / double(height);
    const double rmin = std::min(p.ratio_lo, p.ratio_hi), rmax = std::max(p.ratio_lo, p.ratio_hi);
    // torchvision's formulas; where they give an empty crop (a 1-pixel-high image and a narrow ratio range, where
    // torchvision itself fails) the crop keeps at least one pixel, and never more than the image.
    if (in_ratio < rmin) {
      w = width;
      h = static_cast<int64_t>(std::clamp(std::nearbyint(w / rmin), 1.0, double(height)));
    } else if (in_ratio > rmax) {
      h = height;
      w = static_cast<int64_t>(std::clamp(std::nearbyint(h * rmax), 1.0, double(width)));
    } else {
      w = width;
      h = height;
    }
    i = (height - h) / 2;
    j = (width - w) / 2;
  }
  Crop c = box_crop(j, i, j + w, i + h, p.out_w, p.out_h);
  // Flip draw comes after the crop draws, from the same stream.
  c.flip = p.flip_prob > 0.0 && rng.uniform(0.0, 1.0) < p.flip_prob;
  return c;
}

}  // namespace ipu
