// libjpeg(-turbo) wrapper: header, DCT-scaled region decode into a caller buffer, full-frame decode, EXIF orientation,
// colour conversion and the guards every decode makes. Which region, at which scale, is the caller's choice
// (transform.h).
// libjpeg reports fatal errors by longjmp; that happens only inside jpeg_decoder.cpp, in functions that
// own no C++ objects with destructors, and comes back here as a status and a message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
  // A file with a valid restart index (restart_index.h) has its region decoded from the restart interval holding the
  // first row needed, not from the top; off = the normal path on the same bytes (benchmarks, tests).
  bool restart_index = true;
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

// A window of a decoded image: RGBX (4 bytes a pixel, row stride `stride` bytes) covering columns [x0, x0 + w) and
// rows [y0, y0 + h) of the image at the scale it was decoded at.
struct DecodedRegion {
  const uint8_t* pixels = nullptr;
  int stride = 0;
  int x0 = 0, y0 = 0, w = 0, h = 0;
};

// Per-thread decoder: holds a libjpeg decompress object, reused across images.
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

  // Header, then the checks every decode makes (pixel limit, colour space, scan budget); arms strict mode and the scan
  // cap. On Ok the image is open for one decode_region (or abort).
  DecodeReport open(const uint8_t* data, size_t size, const DecodeOptions& opts, JpegInfo* info);

  // Decode columns [x0, x1) and rows [y0, y1) of the open image (data, size: the bytes given to open) at DCT scale
  // scale_num/8 (1, 2, 4 or 8) into *buf (resized as needed) as RGBX, CMYK converted as Pillow converts it. libjpeg
  // widens the columns to its iMCU grid, so *got can be wider than asked. A baseline file is checked for its
  // end-of-image marker when only part of it was decoded (a truncation below the region would otherwise go
  // unnoticed). report.scale_num = scale_num.
  DecodeReport decode_region(const uint8_t* data, size_t size, int scale_num, int x0, int y0, int x1, int y1,
                             std::vector<uint8_t>* buf, DecodedRegion* got);

  // Give up on the open image (the next call starts clean anyway; this frees libjpeg's per-image memory now).
  void abort();

  struct State;  // libjpeg objects and the error bridge (defined in the .cpp)

 private:
  // The restart-index fast path of decode_region: Ok when it decoded the region, Fallback when the file has no usable
  // index or it did not apply (the open image is then as open() left it), Error only when re-opening failed.
  DecodeReport decode_region_indexed(const uint8_t* data, size_t size, int scale_num, int x0, int y0, int x1, int y1,
                                     std::vector<uint8_t>* buf, DecodedRegion* got);

  State* st_;
  bool use_restart_index_ = true;
  std::vector<uint8_t> window_;  // the synthetic stream of the fast path
  std::vector<uint8_t> raw_;  // full-frame decode before CMYK conversion or EXIF orientation
};

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
