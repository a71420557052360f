#include "pipeline.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "thread_pool.h"

namespace ipu {

JpegDecoder& thread_decoder() {
  thread_local JpegDecoder decoder;
  return decoder;
}

std::string read_file(const std::string& path, std::vector<uint8_t>* buf) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open file: ") + std::strerror(errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return std::string("cannot stat file: ") + std::strerror(e);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return "is a directory, not an image file";
  }
  buf->resize(size_t(st.st_size));
  size_t got = 0;
  while (got < buf->size()) {
    const ssize_t n = ::read(fd, buf->data() + got, buf->size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      return std::string("read error: ") + std::strerror(e);
    }
    if (n == 0) break;  // file shrank while reading
    got += size_t(n);
  }
  ::close(fd);
  buf->resize(got);
  return "";
}

void run_batch(const std::vector<Source>& sources, const int64_t* indices, uint8_t* out, const CropParams& crop,
               Filter filter, uint64_t seed, uint64_t epoch, const DecodeOptions& opts, int num_threads,
               std::vector<SampleResult>* results) {
  const size_t n = sources.size();
  const size_t slot_bytes = size_t(crop.out_h) * size_t(crop.out_w) * 3;
  results->assign(n, SampleResult{});
  ThreadPool::instance().parallel_for(n, num_threads, [&](size_t i, int) {
    SampleResult& res = (*results)[i];
    uint8_t* dst = out + i * slot_bytes;
    try {
      thread_local std::vector<uint8_t> file_buf;
      const Source& src = sources[i];
      const uint8_t* data = src.data;
      size_t size = src.size;
      if (data == nullptr) {
        std::string err = read_file(src.path, &file_buf);
        if (!err.empty()) {
          res.status = Status::Error;
          res.message = err;
        }
        data = file_buf.data();
        size = file_buf.size();
      }
      if (res.status == Status::Ok) {
        const DecodeReport r =
            thread_decoder().decode_transform(data, size, crop, filter, seed, epoch, uint64_t(indices[i]), opts, dst);
        res.status = r.status;
        res.message = r.message;
        res.warnings = r.warnings;
        res.scale_num = r.scale_num;
      }
    } catch (const std::exception& e) {
      res.status = Status::Error;
      res.message = std::string("internal error: ") + e.what();
    }
    if (res.status != Status::Ok) std::memset(dst, 0, slot_bytes);
  });
}

}  // namespace ipu
