// Crop geometry: which box of the source image becomes the output, and whether it is mirrored.
// Randomness comes from a counter-based generator keyed by (seed, epoch, sample index), so a sample's
// crop does not depend on threads, batch composition, rank or call order.
#pragma once
#include <cstdint>

namespace ipu {

enum class CropMode : int { None = 0, Train = 1, Eval = 2 };

struct CropParams {
  CropMode mode = CropMode::None;
  int out_w = 0, out_h = 0;
  // Train: torchvision RandomResizedCrop.
  double scale_lo = 0.08, scale_hi = 1.0;
  double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
  double flip_prob = 0.5;
  // Eval: square box of side min(W, H) * crop_fraction centred on the image (crop_fraction = size / resize_size).
  double crop_fraction = 0.875;
};

struct Crop {
  double box[4];  // left, top, right, bottom in source pixels (fractional for eval)
  bool flip;
};

// Deterministic stream of uniform numbers for one (seed, epoch, index).
class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t epoch, uint64_t index);
  uint64_t next_u64();
  double uniform(double lo, double hi);     // [lo, hi)
  int64_t randint(int64_t lo, int64_t hi);  // [lo, hi)
 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

// The crop for an image of width x height (already oriented). Mode None gives the whole image, no flip.
Crop sample_crop(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index);

}  // namespace ipu
