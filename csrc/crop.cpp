#include "crop.h"

#include <algorithm>
#include <cmath>

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

Crop sample_crop(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index) {
  Crop c{{0.0, 0.0, double(width), double(height)}, false};
  if (p.mode == CropMode::Eval) {
    const double side = std::min(width, height) * p.crop_fraction;
    const double left = (width - side) / 2.0, top = (height - side) / 2.0;
    c.box[0] = left;
    c.box[1] = top;
    c.box[2] = left + side;
    c.box[3] = top + side;
    return c;
  }
  if (p.mode != CropMode::Train) return c;

  // torchvision.transforms.RandomResizedCrop.get_params, with Python's round (half to even = nearbyint).
  CounterRng rng(seed, epoch, index);
  const double area = double(width) * double(height);
  const double log_lo = std::log(p.ratio_lo), log_hi = std::log(p.ratio_hi);
  bool found = false;
  int64_t i = 0, j = 0, w = 0, h = 0;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target_area = area * rng.uniform(p.scale_lo, p.scale_hi);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      i = rng.randint(0, height - h + 1);
      j = rng.randint(0, width - w + 1);
      found = true;
    }
  }
  if (!found) {  // centre fallback
    const double in_ratio = double(width) / double(height);
    const double rmin = std::min(p.ratio_lo, p.ratio_hi), rmax = std::max(p.ratio_lo, p.ratio_hi);
    if (in_ratio < rmin) {
      w = width;
      h = static_cast<int64_t>(std::nearbyint(w / rmin));
    } else if (in_ratio > rmax) {
      h = height;
      w = static_cast<int64_t>(std::nearbyint(h * rmax));
    } else {
      w = width;
      h = height;
    }
    i = (height - h) / 2;
    j = (width - w) / 2;
  }
  c.box[0] = double(j);
  c.box[1] = double(i);
  c.box[2] = double(j + w);
  c.box[3] = double(i + h);
  // Flip draw comes after the crop draws, from the same stream.
  c.flip = p.flip_prob > 0.0 && rng.uniform(0.0, 1.0) < p.flip_prob;
  return c;
}

}  // namespace ipu
