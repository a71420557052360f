#include "crop.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

namespace {

// One torchvision RandomResizedCrop.get_params draw (10 attempts, then the centre fallback), with Python's round
// (half to even = nearbyint): the crop [j, j + w) x [i, i + h).
void draw_resized_crop(const CropParams& p, int width, int height, CounterRng& rng, int64_t* i, int64_t* j,
                       int64_t* w, int64_t* h) {
  const double area = double(width) * double(height);
  const double log_lo = std::log(p.ratio_lo), log_hi = std::log(p.ratio_hi);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(p.scale_lo, p.scale_hi);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    // Compared as doubles before any cast: an extreme ratio makes them far larger than an int64 holds.
    const double wd = std::nearbyint(std::sqrt(target_area * aspect));
    const double hd = std::nearbyint(std::sqrt(target_area / aspect));
    if (wd > 0 && wd <= width && hd > 0 && hd <= height) {
      *w = static_cast<int64_t>(wd);
      *h = static_cast<int64_t>(hd);
      *i = rng.randint(0, height - *h + 1);
      *j = rng.randint(0, width - *w + 1);
      return;
    }
  }
  // centre fallback
  const double in_ratio = double(width) / double(height);
  const double rmin = std::min(p.ratio_lo, p.ratio_hi), rmax = std::max(p.ratio_lo, p.ratio_hi);
  // torchvision's formulas; where they give an empty crop (a 1-pixel-high image and a narrow ratio range, where
  // torchvision itself fails) the crop keeps at least one pixel, and never more than the image.
  if (in_ratio < rmin) {
    *w = width;
    *h = static_cast<int64_t>(std::clamp(std::nearbyint(*w / rmin), 1.0, double(height)));
  } else if (in_ratio > rmax) {
    *h = height;
    *w = static_cast<int64_t>(std::clamp(std::nearbyint(*h * rmax), 1.0, double(width)));
  } else {
    *w = width;
    *h = height;
  }
  *i = (height - *h) / 2;
  *j = (width - *w) / 2;
}

}  // namespace

double box_coverage(const double* boxes, int64_t count, int width, int height, double x0, double y0, double x1,
                    double y1) {
  if (!(x1 > x0 && y1 > y0)) return 0.0;
  // The boxes cut to the crop, then the union's area on the grid of their edges (a handful of boxes an image).
  std::vector<double> xs{x0, x1}, ys{y0, y1};
  std::vector<double> cut;
  cut.reserve(size_t(count) * 4);
  for (int64_t b = 0; b < count; ++b) {
    const double* q = boxes + 4 * b;
    const double bx0 = std::max(x0, q[0] * width), by0 = std::max(y0, q[1] * height);
    const double bx1 = std::min(x1, q[2] * width), by1 = std::min(y1, q[3] * height);
    if (!(bx1 > bx0 && by1 > by0)) continue;
    cut.insert(cut.end(), {bx0, by0, bx1, by1});
    xs.push_back(bx0);
    xs.push_back(bx1);
    ys.push_back(by0);
    ys.push_back(by1);
  }
  if (cut.empty()) return 0.0;
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  std::sort(ys.begin(), ys.end());
  ys.erase(std::unique(ys.begin(), ys.end()), ys.end());
  double covered = 0.0;
  for (size_t a = 0; a + 1 < xs.size(); ++a) {
    const double cx = 0.5 * (xs[a] + xs[a + 1]);
    for (size_t b = 0; b + 1 < ys.size(); ++b) {
      const double cy = 0.5 * (ys[b] + ys[b + 1]);
      for (size_t k = 0; k < cut.size(); k += 4) {
        if (cut[k] <= cx && cx < cut[k + 2] && cut[k + 1] <= cy && cy < cut[k + 3]) {
          covered += (xs[a + 1] - xs[a]) * (ys[b + 1] - ys[b]);
          break;
        }
      }
    }
  }
  return covered / ((x1 - x0) * (y1 - y0));
}

Crop sample_crop(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index) {
  if (p.mode == CropMode::Eval) return eval_crop(p, width, height);
  if (p.mode == CropMode::PadCrop) {
    // torchvision RandomCrop((height, width), padding=pad).get_params on the padded image: the row offset, then the
    // column offset, each uniform over the 2 * pad + 1 positions; then the flip, from the same stream.
    CounterRng rng(seed, epoch, index);
    const int64_t pad = std::max(0, p.pad);
    const int64_t i = rng.randint(0, 2 * pad + 1), j = rng.randint(0, 2 * pad + 1);
    Crop c = box_crop(j - pad, i - pad, j - pad + width, i - pad + height, p.out_w, p.out_h);
    c.flip = p.flip_prob > 0.0 && rng.uniform(0.0, 1.0) < p.flip_prob;
    return c;
  }
  if (p.mode != CropMode::Train) return box_crop(0, 0, width, height, width, height);

  CounterRng rng(seed, epoch, index);
  int64_t i = 0, j = 0, w = 0, h = 0;
  draw_resized_crop(p, width, height, rng, &i, &j, &w, &h);
  const BoxTable* t = p.boxes.get();
  if (t != nullptr && index < t->size()) {
    const int64_t first = t->offsets[size_t(index)], count = t->offsets[size_t(index) + 1] - first;
    const double* boxes = t->boxes.data() + 4 * first;
    // Graphcore's RandomResizedBoxCrop: redraw until the boxes cover enough of the crop; the last draw otherwise.
    for (int tries = 1; count > 0 && tries < p.box_tries &&
                        box_coverage(boxes, count, width, height, double(j), double(i), double(j + w),
                                     double(i + h)) < p.min_box_overlap;
         ++tries) {
      draw_resized_crop(p, width, height, rng, &i, &j, &w, &h);
    }
  }
  Crop c = box_crop(j, i, j + w, i + h, p.out_w, p.out_h);
  // Flip draw comes after the crop draws, from the same stream.
  c.flip = p.flip_prob > 0.0 && rng.uniform(0.0, 1.0) < p.flip_prob;
  return c;
}

}  // namespace ipu
