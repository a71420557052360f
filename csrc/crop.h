// Crop geometry: which box of the source image becomes the output, and whether it is mirrored.
// Randomness comes from a counter-based generator keyed by (seed, epoch, sample index), so a sample's
// crop does not depend on threads, batch composition, rank or call order.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace ipu {

// PadCrop: torchvision RandomCrop(image size, padding=pad) + RandomHorizontalFlip on raw pixels (CIFAR's training
// augmentation): the image, padded with `pad` zero pixels on every side, is cut at a random offset back to its own
// size, then resized to the output when that differs (transform.h, transform_raw).
enum class CropMode : int { None = 0, Train = 1, Eval = 2, PadCrop = 3 };

// Object boxes of a dataset's images, by dataset index, in the image's normalised coordinates (xmin, ymin, xmax, ymax
// in [0, 1]): boxes[offsets[i] .. offsets[i + 1]) belong to sample i; indices at or past size() have none. Immutable
// once built and shared between copies of CropParams (one table per dataset, not per batch).
struct BoxTable {
  std::vector<int64_t> offsets;  // size() + 1 entries, offsets[0] = 0, non-decreasing
  std::vector<double> boxes;     // 4 per box
  uint64_t size() const { return offsets.empty() ? 0 : uint64_t(offsets.size() - 1); }
};

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
  // PadCrop: zero pixels added on each side before the random crop.
  int pad = 0;
  // Train with boxes (Graphcore's RandomResizedBoxCrop, --use-bbox-info): for a sample that has boxes, the whole
  // RandomResizedCrop draw (its 10 attempts and centre fallback) is repeated, up to box_tries draws, until the union of
  // the sample's boxes covers at least min_box_overlap of the crop's area; when no draw does, the last one is kept.
  // A sample without boxes gets exactly one draw, so its crop and flip are those of a run without boxes.
  std::shared_ptr<const BoxTable> boxes;
  int box_tries = 10;
  double min_box_overlap = 0.1;
};

// One sample's geometry in Pillow's terms, in source pixels:
//   out = source.crop(frame).resize((grid_w, grid_h)).crop((off_x, off_y, off_x + out_w, off_y + out_h)), mirrored
// when flip. Train: frame = the RandomResizedCrop box, grid = the output (torchvision's crop, then resize); eval: frame
// = the whole image, grid = the size torchvision's Resize computes, off = the offsets CenterCrop rounds to. The
// resampler computes the window's pixels as the whole resize does (resample.h, OutputWindow), so the result is
// torchvision's on Pillow bit for bit, and the filter never reads outside the frame. PadCrop: frame = the crop in the
// image's coordinates, reaching up to `pad` pixels beyond its edges (read as zeros), grid = the output.
struct Crop {
  int frame[4];        // left, top, right, bottom
  int grid_w, grid_h;  // the frame is resized to this size...
  int off_x, off_y;    // ...and the output is the out_w x out_h window of it at this offset
  double box[4];       // the source region the output covers (fractional for eval): picks the DCT scale
  bool flip;
};

// The fraction of the crop [x0, x1) x [y0, y1) (pixels) that the union of boxes (normalised, 4 doubles each, scaled
// by width x height) covers, computed exactly; 0 for an empty crop.
double box_coverage(const double* boxes, int64_t count, int width, int height, double x0, double y0, double x1,
                    double y1);

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
