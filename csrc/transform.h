// One sample from source to output, composed in one place for JPEG files and for pixels decoded elsewhere (Pillow):
// sample the crop (crop.h), check the output window fits, choose the DCT scale, work out the rows and columns the
// resampler reads, have the decoder decode just those (jpeg_decoder.h), then resize and flip (resample.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crop.h"
#include "jpeg_decoder.h"
#include "resample.h"

namespace ipu {

// What one thread reuses from image to image: a decoder and the buffers between the decoder and the resampler.
struct Workspace {
  JpegDecoder decoder;
  std::vector<uint8_t> region;  // the decoded window (RGBX)
  std::vector<uint8_t> full;    // the oriented full frame, when EXIF orientation must be applied
  ResampleScratch scratch;
};

// The calling thread's workspace (one per thread, reused).
Workspace& thread_workspace();

// The whole transform of a JPEG: header -> crop (sampled from the oriented size) -> smallest fast DCT scale that keeps
// the box at least the output size -> decode only the rows and columns the resampler reads (plus a margin) ->
// antialiased resize + flip into dst (out_h x out_w x 3, row stride out_w * 3). opts.decode_only stops after the decode
// (the benchmark floor). A file the decoder leaves to Pillow comes back with Status::Fallback.
DecodeReport transform_jpeg(Workspace& ws, const uint8_t* data, size_t size, const CropParams& crop, Filter filter,
                            uint64_t seed, uint64_t epoch, uint64_t index, const DecodeOptions& opts, uint8_t* dst);

// The same transform of an already decoded RGB/RGBX image (width x height, `channels` bytes a pixel, rows contiguous),
// e.g. from Pillow for non-JPEG files: same crop, same draws, same resize. Empty on success, else the reason.
std::string transform_pixels(const uint8_t* pixels, int width, int height, int channels, const CropParams& crop,
                             Filter filter, uint64_t seed, uint64_t epoch, uint64_t index, uint8_t* dst,
                             ResampleScratch& scratch);

// The transform of raw pixels (a dataset stored decoded, e.g. CIFAR-10's uint8 HWC arrays): mode PadCrop cuts the
// image, padded with zeros, at its sampled offset back to its own size, mirrors it when drawn, and resizes it to the
// output when that differs (a plain copy when not); the other modes are transform_pixels' (an eval at the image's own
// size, the identity, is a copy). `pad_buf` is reused memory
// for the padded crop. Empty on success, else the reason.
std::string transform_raw(const uint8_t* pixels, int width, int height, int channels, const CropParams& crop,
                          Filter filter, uint64_t seed, uint64_t epoch, uint64_t index, uint8_t* dst,
                          ResampleScratch& scratch, std::vector<uint8_t>& pad_buf);

}  // namespace ipu
