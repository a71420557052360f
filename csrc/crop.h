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
  // Eval: torchvision Resize(resize) then CenterCrop((out_h, out_w)). resize_w and resize_h both > 0: Resize((h, w));
  // otherwise Resize(resize_short), the shorter side to resize_short and the longer one truncated as torchvision does.
  int resize_short = 256;
  int resize_w = 0, resize_h = 0;
};

// One sample's geometry in Pillow's terms, in source pixels:
//   out = source.crop(frame).resize((grid_w, grid_h)).crop((off_x, off_y, off_x + out_w, off_y + out_h)), mirrored
// when flip. Train: frame = the RandomResizedCrop box, grid = the output (torchvision's crop, then resize); eval: frame
// = the whole image, grid = the size torchvision's Resize computes, off = the offsets CenterCrop rounds to. The
// resampler computes the window's pixels as the whole resize does (resample.h, OutputWindow), so the result is
// torchvision's on Pillow bit for bit, and the filter never reads outside the frame.
struct Crop {
  int frame[4];        // left, top, right, bottom
  int grid_w, grid_h;  // the frame is resized to this size...
  int off_x, off_y;    // ...and the output is the out_w x out_h window of it at this offset
  double box[4];       // the source region the output covers (fractional for eval): picks the DCT scale
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

// The crop for an image of width x height (already oriented). Mode None gives the whole image at its size, no flip.
// Eval's grid can be smaller than the output only for parameters EvalTransform refuses (CenterCrop would pad); the
// resampler then refuses the sample.
Crop sample_crop(const CropParams& p, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index);

}  // namespace ipu
