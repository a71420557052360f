// Sources and the batch: read each sample's bytes (in the worker thread, under the file limits) and run its transform
// (transform.h) into its slot of the caller's (N, H, W, 3) buffer, over the shared thread pool, without the GIL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crop.h"
#include "jpeg_decoder.h"
#include "resample.h"
#include "transform.h"

namespace ipu {

struct Source {
  const uint8_t* data = nullptr;  // in-memory bytes, or
  size_t size = 0;
  std::string path;               // a file to read (used when data is null): whole, or
  uint64_t offset = 0;            // when member is set, only bytes [offset, offset + length) of it (a tar shard's
  uint64_t length = 0;            // member), read with pread from a descriptor the worker thread keeps open
  bool member = false;
};

struct SampleResult {
  Status status = Status::Ok;
  std::string message;
  int warnings = 0;
  int scale_num = 8;
};

// Decode sources[i] with dataset index indices[i] into out + i * out_h * out_w * 3. Failed and non-JPEG slots are
// zero-filled and reported in results (never thrown).
void run_batch(const std::vector<Source>& sources, const uint64_t* indices, uint8_t* out, const CropParams& crop,
               Filter filter, uint64_t seed, uint64_t epoch, const DecodeOptions& opts, int num_threads,
               std::vector<SampleResult>* results);

// Read an image file into buf. Empty string on success, else the reason. Refused without reading: anything but a
// regular file (a FIFO would block forever), and files above opts.max_file_bytes. A file above kPlainReadBytes is
// read header first: it must be a JPEG whose frame header lies in that first part and be no larger than its frame
// could need (kBytesPerSample per sample of width x height x components, plus kPlainReadBytes for metadata); a
// larger file that is not a JPEG is read no further than that first part, which is all the decoder looks at before
// leaving it to Pillow.
std::string read_file(const std::string& path, const DecodeOptions& opts, std::vector<uint8_t>* buf);
// Read bytes [offset, offset + length) of the file at path into buf, with pread from a descriptor cached by the calling
// thread (a small LRU keyed by path, opened O_CLOEXEC), so reading many members of one shard opens it once per thread.
// Empty string on success, else the reason. The limits of read_file hold: a file that is not regular is refused when
// it is opened, and a length above opts.max_file_bytes is refused without reading. A range past the end of the file
// (a truncated shard) is an error that gives both sizes.
std::string read_range(const std::string& path, uint64_t offset, uint64_t length, const DecodeOptions& opts,
                       std::vector<uint8_t>* buf);

// Read a source's bytes (a whole file or a member range) into buf; empty string on success, else the reason.
std::string read_source(const Source& src, const DecodeOptions& opts, std::vector<uint8_t>* buf);

// Process-wide I/O counters, for benchmarks and tests: open() calls made to read sources, read/pread calls, bytes read.
struct IoStats {
  uint64_t opens = 0;
  uint64_t reads = 0;
  uint64_t bytes = 0;
};
IoStats io_stats();
void reset_io_stats();
// Close every descriptor the threads have cached, now (a read in progress finishes first): called when a shard may
// have been replaced, so that no thread goes on reading the old file, and when a shared-memory copy is released, so
// that no descriptor keeps its pages alive.
void drop_cached_files();

constexpr size_t kPlainReadBytes = size_t(16) << 20;
constexpr uint64_t kBytesPerSample = 16;  // worst-case Huffman coding with byte stuffing needs about 6.5

}  // namespace ipu
