#include "pipeline.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <new>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "thread_pool.h"

namespace ipu {

namespace {

std::atomic<uint64_t> g_opens{0};
std::atomic<uint64_t> g_reads{0};
std::atomic<uint64_t> g_bytes{0};

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

// Read until buf holds `want` bytes from offset `have`, or the file ends. Returns the bytes held, or -errno.
// Read bytes [have, want) of buf: with read(2) from the file position when `at` < 0, else with pread(2) from file
// offset `at` + have (no shared file position, so one descriptor serves any thread). Returns the bytes held (less than
// want when the file ends first) or -errno. The file was opened O_NONBLOCK (so that opening a FIFO cannot block); that
// flag means nothing for the regular files read here on local filesystems, so it is cleared only if a read ever says
// EAGAIN (a network or FUSE filesystem).
ssize_t read_into(int fd, int64_t at, uint8_t* buf, size_t have, size_t want) {
  while (have < want) {
    const ssize_t n = at < 0 ? ::read(fd, buf + have, want - have)
                             : ::pread(fd, buf + have, want - have, off_t(uint64_t(at) + have));
    g_reads.fetch_add(1, std::memory_order_relaxed);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        const int flags = ::fcntl(fd, F_GETFL);
        if (flags >= 0 && (flags & O_NONBLOCK) && ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0) continue;
      }
      return -errno;
    }
    if (n == 0) break;  // the file ended (it shrank while reading, or the range lies past its end)
    have += size_t(n);
    g_bytes.fetch_add(uint64_t(n), std::memory_order_relaxed);
  }
  return ssize_t(have);
}

// The descriptors one thread keeps open for range reads: a small LRU keyed by path (most recently used last). A
// thread reads a handful of shards at a time (the loader's order visits them at random, so a few dozen at most are
// worth keeping); beyond kCachedFiles the least recently used is closed. Threads end with their cache closed.
// Descriptors are opened O_CLOEXEC, so a program the process execs does not inherit them; a child made by fork()
// shares them, which pread (no file position) allows.
//
// Every cache is registered, so that drop_cached_files() can close them all at once (a shared-memory copy of the
// shards is freed only when no descriptor holds it): a thread holds its own cache's mutex while it looks up and
// reads, which only drop_cached_files() ever contends.
constexpr size_t kCachedFiles = 32;

struct CachedFile {
  std::string path;
  int fd;
  uint64_t size;
};

struct FileCache;
std::mutex g_caches_mu;
std::vector<FileCache*>* g_caches = new std::vector<FileCache*>();  // leaked: thread exits may outlive statics

struct FileCache {
  std::mutex mu;
  std::vector<CachedFile> files;
  FileCache() {
    std::lock_guard<std::mutex> g(g_caches_mu);
    g_caches->push_back(this);
  }
  ~FileCache() {
    {
      std::lock_guard<std::mutex> g(g_caches_mu);
      for (size_t i = 0; i < g_caches->size(); ++i) {
        if ((*g_caches)[i] == this) {
          g_caches->erase(g_caches->begin() + std::ptrdiff_t(i));
          break;
        }
      }
    }
    close_all();
  }
  void close_all() {
    for (const CachedFile& f : files) ::close(f.fd);
    files.clear();
  }
};

thread_local FileCache t_files;

// The cached descriptor of path for this thread, opening it (and checking that it is a regular file) on a miss.
// Returns nullptr and sets *err when it cannot be opened.
const CachedFile* cached_file(const std::string& path, std::string* err) {
  FileCache& cache = t_files;
  for (size_t i = cache.files.size(); i-- > 0;) {
    if (cache.files[i].path == path) {
      if (i + 1 != cache.files.size()) {
        CachedFile hit = std::move(cache.files[i]);
        cache.files.erase(cache.files.begin() + std::ptrdiff_t(i));
        cache.files.push_back(std::move(hit));
      }
      return &cache.files.back();
    }
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  g_opens.fetch_add(1, std::memory_order_relaxed);
  if (fd < 0) {
    *err = std::string("cannot open shard: ") + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    *err = std::string("cannot stat shard: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = std::string("is ") + file_kind(st.st_mode) + ", not a shard file (only regular files are read)";
    ::close(fd);
    return nullptr;
  }
  if (cache.files.size() >= kCachedFiles) {
    ::close(cache.files.front().fd);
    cache.files.erase(cache.files.begin());
  }
  cache.files.push_back(CachedFile{path, fd, uint64_t(st.st_size)});
  return &cache.files.back();
}

std::string mib(uint64_t bytes) {
  char b[48];
  std::snprintf(b, sizeof(b), "%.1f MiB", double(bytes) / double(1 << 20));
  return b;
}

// Empty when a file of file_bytes whose first `head` bytes are in buf may be read whole, else why not.
std::string check_head(const uint8_t* buf, size_t head, uint64_t file_bytes) {
  if (!looks_like_jpeg(buf, head)) return "";  // left to Pillow: only the head is read (see read_file)
  FrameHeader f;
  const FrameSearch found = find_frame_header(buf, head, &f);
  if (found != FrameSearch::Found) {
    return "JPEG file of " + mib(file_bytes) + " with no frame header in its first " + mib(head) +
           " (not a plausible image; refused before reading the rest)";
  }
  const uint64_t bound = kBytesPerSample * uint64_t(f.width) * uint64_t(f.height) * uint64_t(f.components) +
                         kPlainReadBytes;
  if (file_bytes > bound) {
    char b[320];
    std::snprintf(b, sizeof(b),
                  "file of %s is far larger than its %dx%d %d-component JPEG frame can need (at most %s: %d bytes a "
                  "sample plus %s of metadata); refused before reading it",
                  mib(file_bytes).c_str(), f.width, f.height, f.components, mib(bound).c_str(),
                  int(kBytesPerSample), mib(kPlainReadBytes).c_str());
    return b;
  }
  return "";
}

}  // namespace

// The size cap, for a file or a shard member (`what`) of `size` bytes: empty when it is within opts.max_file_bytes.
std::string over_size_limit(const char* what, uint64_t size, const DecodeOptions& opts) {
  if (opts.max_file_bytes > 0 && size > uint64_t(opts.max_file_bytes)) {
    return std::string(what) + " of " + mib(size) + " (" + std::to_string(size) + " bytes) is above the limit of " +
           mib(uint64_t(opts.max_file_bytes)) + " (raise max_file_bytes to allow it)";
  }
  return "";
}

// Read `size` bytes of fd (from its position when `at` < 0, else from offset `at`) into buf, resized to what was read.
// Above kPlainReadBytes the head is read first and must be a plausible JPEG for its size (check_head); a large
// non-JPEG is read no further than that head. *wanted gets the bytes that should have been read.
std::string read_bounded(int fd, int64_t at, uint64_t size, std::vector<uint8_t>* buf, size_t* wanted) {
  size_t want = size_t(size);
  ssize_t got = 0;
  if (size > kPlainReadBytes) {
    buf->resize(kPlainReadBytes);
    got = read_into(fd, at, buf->data(), 0, kPlainReadBytes);
    if (got < 0) return std::string("read error: ") + std::strerror(int(-got));
    std::string bad = check_head(buf->data(), size_t(got), size);
    if (!bad.empty()) return bad;
    if (!looks_like_jpeg(buf->data(), size_t(got))) want = size_t(got);
  }
  buf->resize(want);
  got = read_into(fd, at, buf->data(), size_t(got), want);
  if (got < 0) return std::string("read error: ") + std::strerror(int(-got));
  buf->resize(size_t(got));
  *wanted = want;
  return "";
}

std::string read_file(const std::string& path, const DecodeOptions& opts, std::vector<uint8_t>* buf) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  g_opens.fetch_add(1, std::memory_order_relaxed);
  if (fd < 0) return std::string("cannot open file: ") + std::strerror(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return std::string("cannot stat file: ") + std::strerror(errno);
  if (!S_ISREG(st.st_mode)) {
    return std::string("is ") + file_kind(st.st_mode) + ", not an image file (only regular files are read)";
  }
  const uint64_t size = uint64_t(st.st_size);
  std::string too_big = over_size_limit("file", size, opts);
  if (!too_big.empty()) return too_big;
  size_t want = 0;
  return read_bounded(fd, -1, size, buf, &want);  // a file that shrank while read keeps what it held
}

std::string read_range(const std::string& path, uint64_t offset, uint64_t length, const DecodeOptions& opts,
                       std::vector<uint8_t>* buf) {
  std::string too_big = over_size_limit("member", length, opts);
  if (!too_big.empty()) return too_big;
  std::lock_guard<std::mutex> hold(t_files.mu);  // drop_cached_files() may not close it under our read
  std::string err;
  const CachedFile* f = cached_file(path, &err);
  if (f == nullptr) return err;
  if (offset > f->size || length > f->size - offset) {
    return "member at bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) +
           " lies past the end of the shard (" + std::to_string(f->size) +
           " bytes): the shard is truncated or was rewritten after it was indexed";
  }
  size_t want = 0;  // as read_file: a large member must be a plausible JPEG before all of it is read
  std::string err_read = read_bounded(f->fd, int64_t(offset), length, buf, &want);
  if (!err_read.empty()) return err_read;
  const size_t got = buf->size();
  if (got < want) {
    return "member at bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) + " ends early: " +
           "the shard holds only " + std::to_string(offset + uint64_t(got)) + " bytes (truncated)";
  }
  return "";
}

std::string read_source(const Source& src, const DecodeOptions& opts, std::vector<uint8_t>* buf) {
  return src.member ? read_range(src.path, src.offset, src.length, opts, buf) : read_file(src.path, opts, buf);
}

IoStats io_stats() {
  IoStats s;
  s.opens = g_opens.load(std::memory_order_relaxed);
  s.reads = g_reads.load(std::memory_order_relaxed);
  s.bytes = g_bytes.load(std::memory_order_relaxed);
  return s;
}

void reset_io_stats() {
  g_opens.store(0, std::memory_order_relaxed);
  g_reads.store(0, std::memory_order_relaxed);
  g_bytes.store(0, std::memory_order_relaxed);
}

void drop_cached_files() {
  std::lock_guard<std::mutex> g(g_caches_mu);
  for (FileCache* cache : *g_caches) {
    std::lock_guard<std::mutex> c(cache->mu);
    cache->close_all();
  }
}

namespace {
// In a child made by fork(), only the forking thread exists: the other threads' caches are forgotten (their mutexes
// may have been copied locked; their descriptors stay open, shared with the parent, until the child exits).
void forget_other_caches_after_fork() {
  new (&g_caches_mu) std::mutex();  // it may have been copied locked
  g_caches = new std::vector<FileCache*>();
  FileCache* mine = &t_files;  // the forking thread's own cache (not reading: forking); a first use registers it
  bool listed = false;
  for (FileCache* c : *g_caches) listed = listed || c == mine;
  if (!listed) g_caches->push_back(mine);
}
const int g_fork_handler = pthread_atfork(nullptr, nullptr, &forget_other_caches_after_fork);
}  // namespace

void run_batch(const std::vector<Source>& sources, const uint64_t* indices, uint8_t* out, const CropParams& crop,
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
        std::string err = read_source(src, opts, &file_buf);
        if (!err.empty()) {
          res.status = Status::Error;
          res.message = err;
        }
        data = file_buf.data();
        size = file_buf.size();
      }
      if (res.status == Status::Ok) {
        const DecodeReport r =
            transform_jpeg(thread_workspace(), data, size, crop, filter, seed, epoch, indices[i], opts, dst);
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
