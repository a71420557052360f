// Restart-indexed JPEGs: a lossless coefficient-level transcode that cuts every MCU row into restart intervals of
// equal width (tiles of a few MCUs) and records where each interval starts, so that a region decode reads only the
// tiles its crop covers: it begins at the MCU row holding its first row instead of entropy-decoding every row above
// it, and leaves out the tiles left and right of it, which the normal path must entropy-decode too (Huffman decoding
// is sequential; restart markers are the only places a baseline scan can be entered). Whole-slide-image readers do
// the same with tiled JPEGs.
//
// The offsets travel IN the JPEG, as a private APP10 segment placed just before SOS:
//   "IPURSTIX" (8) | version u8 | reserved u8 = 0 | width u16 | height u16 | restart interval u16 (MCUs, a divisor of
//   the MCUs per row: the interval never straddles two rows) | intervals u16 (= MCU rows x intervals per row, in row
//   order) | scan bytes u32 (entropy-coded data up to EOI) | offsets | FNV-1a u32 of all the bytes before it
// Offsets count from the first byte after the SOS segment (the first is 0), one per interval:
//   version 2: u32 of each row's first interval x MCU rows, then u16 x MCU rows x (intervals per row - 1): each other
//              interval's distance from the one before it in its row (written whenever every such distance fits 16
//              bits: 2 bytes a tile instead of 4, which is most of the index's size);
//   version 1: u32 x intervals (written when some distance does not fit).
// The segment holds at most 65,533 bytes, which bounds the intervals (restart_interval_for keeps within it).
// (big-endian, like JPEG itself). Offsets are relative to the scan data, which the segment's own insertion before SOS
// does not move. Every other decoder skips an unknown APPn, so the file stays a plain baseline JPEG. Keeping the index
// in the sample's bytes (not in a shard index) keeps a 1.28M-sample shard index small and helps loose files too.
//
// A segment is trusted only after checking it against the file: checksum, frame size, DRI, the MCU grid, the scan
// length up to an EOI marker, and an RSTn marker (numbered as the decoder expects) just before every offset. Anything
// else (a tool that re-encoded the scan but kept the APPn, a damaged byte) makes it "absent" and the normal path runs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "jpeg_decoder.h"

namespace ipu {

constexpr uint8_t kRestartIndexMarker = 0xEA;  // APP10
constexpr char kRestartIndexTag[8] = {'I', 'P', 'U', 'R', 'S', 'T', 'I', 'X'};

// A validated index of a file.
struct RestartIndex {
  int width = 0, height = 0;
  int mcu_w = 0, mcu_h = 0;         // MCU size in pixels (8 x max sampling factor; 8x8 for a single component)
  int restart_interval = 0;         // MCUs per interval (a divisor of the MCUs per row)
  int intervals = 0;                // = mcu_rows x tiles_per_row, row by row
  int mcu_rows = 0;                 // MCU rows of the frame
  int tiles_per_row = 0;            // intervals per MCU row
  int tile_w = 0;                   // interval width in pixels (restart_interval x mcu_w)
  size_t scan_start = 0;            // first byte of entropy-coded data (just past the SOS segment)
  size_t scan_bytes = 0;            // entropy-coded bytes up to the EOI marker
  size_t segment_pos = 0, segment_bytes = 0;  // the APP10 segment (marker included)
  int version = 0;                  // of the segment's offset table (1 or 2)
  // Each interval's offset from the first byte of scan data, in interval order: both versions' tables decoded once,
  // while every offset is checked against its RST marker.
  std::vector<uint32_t> offsets;
  uint32_t offset(int i) const { return offsets[size_t(i)]; }
};

// Find and check the index of a file. false when there is none or it cannot be trusted; *why (when given) says which.
bool find_restart_index(const uint8_t* data, size_t size, RestartIndex* index, std::string* why = nullptr);

// Transcode data (any JPEG libjpeg reads: baseline, progressive, arithmetic) into a baseline Huffman JPEG whose MCU
// rows are cut into restart intervals of about tile_width pixels (restart_interval_for; tile_width <= 0: one interval
// per row), with its index segment; APPn and COM segments are kept (an older index is replaced).
// Already-indexed input is copied as is. Returns "" on success, else why the file was not transcoded (corrupt data,
// a colour space or precision this libjpeg cannot carry, a progressive file libjpeg would block-smooth, limits).
// optimize_coding: per-image Huffman tables (smaller and as fast to decode) instead of the standard ones.
std::string add_restart_index(const uint8_t* data, size_t size, const DecodeOptions& opts, bool optimize_coding,
                              int tile_width, std::vector<uint8_t>* out);

// The default tile_width of the packer's transcode (pixels); see docs and the benchmark for how it was chosen.
constexpr int kDefaultRestartTileWidth = 64;

// MCUs per restart interval for a frame of per_row x rows MCUs of mcu_w pixels: a divisor of per_row (an interval
// never straddles two rows), the widest whose width is at most tile_width if that is at least half of it, else the
// narrowest wider one if that is at most twice tile_width, else per_row (whole rows); then grown to the next divisor
// while the index would not fit one segment. tile_width <= 0: per_row.
int restart_interval_for(int per_row, int rows, int mcu_w, int tile_width);

// A self-contained baseline JPEG holding MCU rows [row_a, row_b] x tiles [tile_a, tile_b] of an indexed file: its
// header segments up to SOS (APP0/APP14, which set the colour transform, kept; other APPn and COM left out) with the
// SOF height and width cut to that rectangle (the true remainder where it reaches the bottom or right edge), then the
// scan data of those intervals, row by row, with RST markers between them numbered from RST0, then EOI. Every interval
// starts with reset DC predictors and a byte-aligned bit reader, so decoding it gives the same coefficients for that
// rectangle as decoding the whole file. false when the rectangle is out of range.
bool build_restart_window(const uint8_t* data, size_t size, const RestartIndex& index, int row_a, int row_b,
                          int tile_a, int tile_b, std::vector<uint8_t>* out);

}  // namespace ipu
