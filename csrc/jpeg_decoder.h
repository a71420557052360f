// libjpeg(-turbo) wrapper: header, DCT-scaled region decode, full-frame decode, EXIF orientation.
// libjpeg reports fatal errors by longjmp; that happens only inside jpeg_decoder.cpp, in functions that
// own no C++ objects with destructors, and comes back here as a status and a message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crop.h"
#include "resample.h"

namespace ipu {

struct DecodeOptions {
  int64_t max_pixels = 178956970;  // Pillow's DecompressionBombError threshold (2 x 89,478,485)
  int max_scans = 500;             // progressive scans; real files have up to ~20
  // 8x8 coefficient blocks the scans of a multi-scan (progressive) file may decode, summed over its scans: what a scan
  // costs does not depend on how much data it holds, so this bounds the work a few bytes of scan headers can ask for.
  // 2^26 = 67,108,864: 8 passes over the largest 4:4:4 image max_pixels allows; the usual 10-scan script makes ~5.
  int64_t max_scan_blocks = int64_t(1) << 26;
  int64_t max_file_bytes = int64_t(1) << 30;  // files above 1 GiB are refused before they are read (0 = no cap)
  bool strict = false;             // every libjpeg warning is an error
  bool apply_exif_orientation = false;
  bool dct_scaling = true;         // decode at the smallest fast DCT scale that keeps full quality
  bool decode_only = false;        // benchmark floor: decode the region the crop needs, skip the resize
};

enum class Status : int { Ok = 0, Fallback = 1, Error = 2 };

struct JpegInfo {
  int width = 0, height = 0;  // as stored (before EXIF orientation)
  int components = 0;
  int color_space = 0;        // libjpeg J_COLOR_SPACE of the file
  bool progressive = false;
  bool arithmetic = false;
  int orientation = 1;        // EXIF orientation 1..8 (1 when absent or not asked for)
};

// What one decode reports besides pixels.
struct DecodeReport {
  Status status = Status::Ok;
  std::string message;  // reason, when status != Ok
  int warnings = 0;     // corrupt-data warnings libjpeg emitted (decoded anyway)
  int scale_num = 8;    // DCT scale used, scale_num / 8
};

// Per-thread decoder: holds a libjpeg decompress object and scratch buffers, reused across images.
class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Header only (no pixel decode). with_orientation reads the EXIF APP1 segment; strict turns warnings met in the
  // header (e.g. extraneous bytes before a marker) into errors.
  DecodeReport read_header(const uint8_t* data, size_t size, bool with_orientation, JpegInfo* info,
                           bool strict = false);

  // Full frame at scale 1 as RGB (3 bytes per pixel), EXIF orientation applied when opts say so.
  // Pixels go to *pixels (resized), dimensions to *width / *height.
  DecodeReport decode_full(const uint8_t* data, size_t size, const DecodeOptions& opts, std::vector<uint8_t>* pixels,
                           int* width, int* height);

  // The whole transform: header -> crop (sampled from the oriented size) -> smallest fast DCT scale that keeps
  // the box at least the output size -> decode only the rows and columns the resampler reads (plus a margin)
  // -> antialiased resize + flip into dst (out_h x out_w x 3, row stride out_w * 3).
  DecodeReport decode_transform(const uint8_t* data, size_t size, const CropParams& crop, Filter filter,
                                uint64_t seed, uint64_t epoch, uint64_t index, const DecodeOptions& opts,
                                uint8_t* dst);

  struct State;  // libjpeg objects and the error bridge (defined in the .cpp)

 private:
  // Header, then the checks every decode makes (pixel limit, colour space); arms strict mode and the scan cap.
  DecodeReport begin(const uint8_t* data, size_t size, const DecodeOptions& opts, JpegInfo* info);

  State* st_;
  std::vector<uint8_t> region_;  // decoded window (RGBX)
  std::vector<uint8_t> full_;    // oriented full frame when EXIF orientation must be applied
  ResampleScratch scratch_;
};

// Resize a decoded RGB/RGBX image (e.g. from Pillow for non-JPEG files) with the same crop semantics.
bool transform_pixels(const uint8_t* pixels, int width, int height, int channels, const CropParams& crop, Filter filter,
                      uint64_t seed, uint64_t epoch, uint64_t index, uint8_t* dst, ResampleScratch& scratch);

// True when the bytes start like a JPEG file (SOI followed by a marker).
bool looks_like_jpeg(const uint8_t* data, size_t size);

// The frame (SOF) header, read without libjpeg so that the first part of a file can be looked at before the rest is
// read. The marker segments are walked as libjpeg's marker reader walks them.
struct FrameHeader {
  int width = 0, height = 0, components = 0;
};
enum class FrameSearch { Found, Absent, Incomplete };  // Absent: a scan or the end of the image came first
FrameSearch find_frame_header(const uint8_t* data, size_t size, FrameHeader* frame);

// Linked library, e.g. "libjpeg-turbo 2.1.5 (libjpeg API 62)".
std::string jpeg_library_version();
bool is_libjpeg_turbo();

}  // namespace ipu
