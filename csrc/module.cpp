// pybind11 surface of the native core: plain arguments and caller-owned buffers. Every buffer is checked once under
// the GIL (shape, dtype, contiguity, writability), then the GIL is released for all pure C++ work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

#include "crop.h"
#include "jpeg_decoder.h"
#include "pipeline.h"
#include "raw_batch.h"
#include "resample.h"
#include "restart_index.h"
#include "thread_pool.h"
#include "transform.h"

namespace py = pybind11;
using namespace ipu;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style>;

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s << (d ? ", " : "") << a.shape(d);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

// Refuse anything but a C-contiguous, writable uint8 array of the given shape (-1 = any), saying what was given.
uint8_t* checked_out(const py::object& obj, const std::vector<py::ssize_t>& shape, const char* what) {
  std::ostringstream need;
  need << "(";
  for (size_t d = 0; d < shape.size(); ++d) {
    need << (d ? ", " : "");
    if (shape[d] < 0) need << "N"; else need << shape[d];
  }
  need << ")";
  if (!py::isinstance<py::array>(obj)) {
    throw py::value_error(std::string(what) + " must be a numpy uint8 array of shape " + need.str() + ", got " +
                          std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const std::string desc = std::string(" (got dtype ") + std::string(py::str(a.dtype())) + ", shape " + shape_str(a) + ")";
  if (!a.dtype().is(py::dtype::of<uint8_t>()))
    throw py::value_error(std::string(what) + " must have dtype uint8 and shape " + need.str() + desc);
  bool ok = a.ndim() == py::ssize_t(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  if (!ok) throw py::value_error(std::string(what) + " must have shape " + need.str() + desc);
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous" + desc + "; pass np.ascontiguousarray(...)");
  if (!a.writeable()) throw py::value_error(std::string(what) + " must be writable" + desc);
  return static_cast<uint8_t*>(a.mutable_data());
}

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::of(obj).attr("__module__"))) == "builtins"
             ? std::string(py::str(py::type::of(obj).attr("__name__")))
             : std::string(py::str(py::type::of(obj).attr("__module__"))) + "." +
                   std::string(py::str(py::type::of(obj).attr("__name__")));
}

// A source is a str path (read in the worker thread) or a buffer of bytes read in place (kept alive by `keep`). The
// decoder reads size bytes from the start pointer, so only a C-contiguous buffer of one-byte items is taken: a strided
// view (a[::-1], np.broadcast_to) would be read out of bounds. `what` names the source in the error.
Source to_source(const py::handle& obj, const std::string& what, std::vector<py::buffer_info>* keep) {
  Source s;
  if (py::isinstance<py::str>(obj)) {
    s.path = obj.cast<std::string>();
    return s;
  }
  if (py::isinstance<py::tuple>(obj)) {  // (path, offset, length): a member of a tar shard (a named tuple may add more)
    const py::tuple t = py::reinterpret_borrow<py::tuple>(obj);
    if (t.size() < 3 || !py::isinstance<py::str>(t[0]) || !py::isinstance<py::int_>(t[1]) ||
        !py::isinstance<py::int_>(t[2])) {
      throw py::type_error(what + " as a tuple must be (path: str, offset: int, length: int), a member of a shard");
    }
    const long long offset = t[1].cast<long long>(), length = t[2].cast<long long>();
    if (offset < 0 || length < 0) {
      throw py::value_error(what + ": offset and length must be >= 0, got " + std::to_string(offset) + " and " +
                            std::to_string(length));
    }
    s.path = t[0].cast<std::string>();
    s.offset = uint64_t(offset);
    s.length = uint64_t(length);
    s.member = true;
    return s;
  }
  if (!PyObject_CheckBuffer(obj.ptr())) {
    throw py::type_error(what + " must be a path (str) or a bytes-like object (or a (path, offset, length) member of "
                         "a tar shard), got " + type_name(obj));
  }
  keep->push_back(py::reinterpret_borrow<py::buffer>(obj).request());
  const py::buffer_info& info = keep->back();
  const bool contiguous = PyBuffer_IsContiguous(info.view(), 'C') != 0;
  if (info.itemsize != 1 || !contiguous) {
    std::ostringstream m;
    m << what << " must be a C-contiguous buffer of bytes (bytes, bytearray, memoryview, or a C-contiguous uint8 numpy "
      << "array), got " << type_name(obj) << " with format '" << info.format << "', itemsize " << info.itemsize
      << ", shape (";
    for (size_t d = 0; d < info.shape.size(); ++d) m << (d ? ", " : "") << info.shape[d];
    m << (info.shape.size() == 1 ? ",), strides (" : "), strides (");
    for (size_t d = 0; d < info.strides.size(); ++d) m << (d ? ", " : "") << info.strides[d];
    m << (info.strides.size() == 1 ? ",)" : ")");
    m << (info.itemsize != 1 ? "; pass its bytes (a.tobytes(), or a.view(np.uint8) when contiguous)"
                             : "; pass np.ascontiguousarray(a) or bytes(a)");
    throw py::value_error(m.str());
  }
  s.data = static_cast<const uint8_t*>(info.ptr);
  s.size = size_t(info.size);
  return s;
}

py::tuple decode_batch(const py::list& sources, const py::object& out, const CropParams& crop, int filter,
                       uint64_t seed, uint64_t epoch, const py::object& indices, int num_threads,
                       const DecodeOptions& opts) {
  const py::ssize_t n = py::ssize_t(sources.size());
  if (crop.out_w < 1 || crop.out_h < 1) throw py::value_error("output size must be positive");
  uint8_t* dst = checked_out(out, {n, crop.out_h, crop.out_w, 3}, "out");
  std::vector<uint64_t> idx(static_cast<size_t>(n));
  if (indices.is_none()) {
    for (py::ssize_t i = 0; i < n; ++i) idx[size_t(i)] = uint64_t(i);
  } else {
    // The Python wrapper hands a uint64 array checked to hold integers in [0, 2**64).
    auto arr = py::array_t<uint64_t, py::array::c_style>::ensure(indices);
    if (!arr || arr.ndim() != 1 || arr.shape(0) != n)
      throw py::value_error("indices must be a 1-D sequence of " + std::to_string(n) + " integers (one per source)");
    for (py::ssize_t i = 0; i < n; ++i) idx[size_t(i)] = arr.at(i);
  }
  std::vector<py::buffer_info> keep;
  keep.reserve(size_t(n));
  std::vector<Source> srcs;
  srcs.reserve(size_t(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    srcs.push_back(to_source(sources[size_t(i)], "sources[" + std::to_string(i) + "]", &keep));
  }
  std::vector<SampleResult> results;
  {
    py::gil_scoped_release release;
    run_batch(srcs, idx.data(), dst, crop, Filter(filter), seed, epoch, opts,
              num_threads > 0 ? num_threads : ThreadPool::available_cpus(), &results);
  }
  py::list failures;
  int warnings = 0;
  std::vector<int> scales(9, 0);
  for (py::ssize_t i = 0; i < n; ++i) {
    const SampleResult& r = results[size_t(i)];
    warnings += r.warnings;
    if (r.status == Status::Ok) scales[size_t(r.scale_num)] += 1;
    else failures.append(py::make_tuple(i, r.status, r.message));
  }
  return py::make_tuple(failures, warnings, scales);
}

// Runs fn over the bytes of a source for the single-image calls (a path is read here, without the GIL, under opts'
// file limits). A file that cannot be read is an Error report, as it is for a sample of a batch.
template <typename F>
DecodeReport with_bytes(const py::object& source, const DecodeOptions& opts, F&& fn) {
  std::vector<py::buffer_info> keep;
  Source s = to_source(source, "source", &keep);
  std::vector<uint8_t> buf;
  py::gil_scoped_release release;
  if (s.data == nullptr) {
    std::string err = read_source(s, opts, &buf);
    if (!err.empty()) {
      DecodeReport r;
      r.status = Status::Error;
      r.message = err;
      return r;
    }
    s.data = buf.data();
    s.size = buf.size();
  }
  return fn(s.data, s.size);
}

// A BoxTable from offsets (int64, n + 1, from 0, non-decreasing) and boxes (float64, (offsets[n], 4), normalised
// xmin <= xmax, ymin <= ymax), checked here so that the sampler can trust it.
std::shared_ptr<BoxTable> make_box_table(const py::object& offsets_obj, const py::object& boxes_obj) {
  auto offsets = py::array_t<int64_t, py::array::c_style>::ensure(offsets_obj);
  auto boxes = py::array_t<double, py::array::c_style>::ensure(boxes_obj);
  if (!offsets || offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw py::value_error("offsets must be a 1-D int64 array of n + 1 entries (one more than the samples)");
  const int64_t n_boxes = boxes && boxes.ndim() == 2 && boxes.shape(1) == 4 ? int64_t(boxes.shape(0)) : -1;
  if (n_boxes < 0) throw py::value_error("boxes must be a float64 array of shape (M, 4): xmin, ymin, xmax, ymax");
  auto t = std::make_shared<BoxTable>();
  t->offsets.assign(offsets.data(), offsets.data() + offsets.shape(0));
  if (t->offsets.front() != 0 || t->offsets.back() != n_boxes)
    throw py::value_error("offsets must start at 0 and end at the number of boxes (" + std::to_string(n_boxes) + ")");
  for (size_t i = 1; i < t->offsets.size(); ++i) {
    if (t->offsets[i] < t->offsets[i - 1]) throw py::value_error("offsets must be non-decreasing");
  }
  t->boxes.assign(boxes.data(), boxes.data() + 4 * n_boxes);
  for (int64_t b = 0; b < n_boxes; ++b) {
    const double* q = t->boxes.data() + 4 * b;
    if (!(q[0] >= 0.0 && q[0] <= q[2] && q[2] <= 1.0 && q[1] >= 0.0 && q[1] <= q[3] && q[3] <= 1.0))
      throw py::value_error("box " + std::to_string(b) + " is not a normalised (xmin, ymin, xmax, ymax) with "
                            "0 <= min <= max <= 1");
  }
  return t;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ipu_cnn native core: region JPEG decode + antialiased resize + flip into caller-owned batch buffers";

  py::class_<CropParams>(m, "CropParams")
      .def(py::init<>())
      .def_property(
          "mode", [](const CropParams& p) { return int(p.mode); }, [](CropParams& p, int v) {
            if (v < int(CropMode::None) || v > int(CropMode::PadCrop))
              throw py::value_error("CropParams.mode must be 0 (whole image), 1 (train), 2 (eval) or 3 (pad crop), got " +
                                    std::to_string(v));
            p.mode = CropMode(v);
          })
      .def_readwrite("out_w", &CropParams::out_w)
      .def_readwrite("out_h", &CropParams::out_h)
      .def_readwrite("scale_lo", &CropParams::scale_lo)
      .def_readwrite("scale_hi", &CropParams::scale_hi)
      .def_readwrite("ratio_lo", &CropParams::ratio_lo)
      .def_readwrite("ratio_hi", &CropParams::ratio_hi)
      .def_readwrite("flip_prob", &CropParams::flip_prob)
      .def_readwrite("resize_short", &CropParams::resize_short)
      .def_readwrite("resize_w", &CropParams::resize_w)
      .def_readwrite("resize_h", &CropParams::resize_h)
      .def_readwrite("pad", &CropParams::pad)
      .def_readwrite("box_tries", &CropParams::box_tries)
      .def_readwrite("min_box_overlap", &CropParams::min_box_overlap)
      .def_property(
          "boxes", [](const CropParams& p) { return std::const_pointer_cast<BoxTable>(p.boxes); },
          [](CropParams& p, std::shared_ptr<BoxTable> t) { p.boxes = std::move(t); });

  py::class_<BoxTable, std::shared_ptr<BoxTable>>(
      m, "BoxTable", "Object boxes by dataset index (crop.h): boxes[offsets[i]:offsets[i + 1]] belong to sample i.")
      .def(py::init(&make_box_table), py::arg("offsets"), py::arg("boxes"))
      .def("__len__", [](const BoxTable& t) { return t.size(); })
      .def_property_readonly("num_boxes", [](const BoxTable& t) { return t.boxes.size() / 4; });

  py::class_<DecodeOptions>(m, "DecodeOptions")
      .def(py::init<>())
      .def_readwrite("max_pixels", &DecodeOptions::max_pixels)
      .def_readwrite("max_scans", &DecodeOptions::max_scans)
      .def_readwrite("max_scan_blocks", &DecodeOptions::max_scan_blocks)
      .def_readwrite("max_file_bytes", &DecodeOptions::max_file_bytes)
      .def_readwrite("strict", &DecodeOptions::strict)
      .def_readwrite("apply_exif_orientation", &DecodeOptions::apply_exif_orientation)
      .def_readwrite("dct_scaling", &DecodeOptions::dct_scaling)
      .def_readwrite("decode_only", &DecodeOptions::decode_only)
      .def_readwrite("restart_index", &DecodeOptions::restart_index);

  py::enum_<Status>(m, "Status",
                    "What became of one image: decoded, left to Pillow (not a JPEG, or a JPEG process this libjpeg "
                    "lacks), or refused (the reason says why).")
      .value("OK", Status::Ok)
      .value("FALLBACK", Status::Fallback)
      .value("ERROR", Status::Error);

  py::class_<DecodeReport>(m, "DecodeReport", "The outcome of one single-image call besides its pixels.")
      .def_readonly("status", &DecodeReport::status)
      .def_readonly("reason", &DecodeReport::message, "why, when status is not OK")
      .def_readonly("warnings", &DecodeReport::warnings, "corrupt-data warnings libjpeg emitted (decoded anyway)")
      .def_readonly("scale_num", &DecodeReport::scale_num, "DCT scale used, scale_num / 8")
      .def("__repr__", [](const DecodeReport& r) {
        return "DecodeReport(status=" + std::string(r.status == Status::Ok ? "OK" : r.status == Status::Fallback
                                                                                      ? "FALLBACK" : "ERROR") +
               ", reason=" + std::string(py::repr(py::str(r.message))) + ")";
      });

  m.def("decode_batch", &decode_batch, py::arg("sources"), py::arg("out"), py::arg("crop"), py::arg("filter"),
        py::arg("seed"), py::arg("epoch"), py::arg("indices"), py::arg("num_threads"), py::arg("options"),
        "Decode, crop, resize and flip every source into out[i]. Returns (failures [(position, Status, reason)], "
        "warnings, count of images per DCT scale numerator); a failed slot is zero-filled.");

  m.def(
      "decode_full",
      [](const py::object& source, const DecodeOptions& opts) {
        std::vector<uint8_t> pixels;
        int w = 0, h = 0;
        DecodeReport r = with_bytes(source, opts, [&](const uint8_t* d, size_t n) {
          return thread_workspace().decoder.decode_full(d, n, opts, &pixels, &w, &h);
        });
        if (r.status != Status::Ok) return py::make_tuple(r, py::object(py::none()));
        U8Array arr({py::ssize_t(h), py::ssize_t(w), py::ssize_t(3)});
        std::memcpy(arr.mutable_data(), pixels.data(), pixels.size());
        return py::make_tuple(r, py::object(arr));
      },
      py::arg("source"), py::arg("options"),
      "Full-frame RGB decode: (report, array HxWx3), the array None unless report.status is OK.");

  m.def(
      "decode_transform",
      [](const py::object& source, const py::object& out, const CropParams& crop, int filter, uint64_t seed,
         uint64_t epoch, uint64_t index, const DecodeOptions& opts) {
        uint8_t* dst = checked_out(out, {crop.out_h, crop.out_w, 3}, "out");
        DecodeReport r = with_bytes(source, opts, [&](const uint8_t* d, size_t n) {
          return transform_jpeg(thread_workspace(), d, n, crop, Filter(filter), seed, epoch, index, opts, dst);
        });
        return r;
      },
      py::arg("source"), py::arg("out"), py::arg("crop"), py::arg("filter"), py::arg("seed"), py::arg("epoch"),
      py::arg("index"), py::arg("options"),
      "One sample of decode_batch into out (H, W, 3); out holds it when report.status is OK.");

  m.def(
      "read_header",
      [](const py::object& source, bool with_orientation, const DecodeOptions& opts) {
        JpegInfo info;
        DecodeReport r = with_bytes(source, opts, [&](const uint8_t* d, size_t n) {
          DecodeReport rep = thread_workspace().decoder.read_header(d, n, with_orientation, &info);
          return rep;
        });
        if (r.status != Status::Ok) return py::make_tuple(r, py::object(py::none()));
        py::dict h;
        h["width"] = info.width;
        h["height"] = info.height;
        h["components"] = info.components;
        h["color_space"] = info.color_space;
        h["progressive"] = info.progressive;
        h["arithmetic"] = info.arithmetic;
        h["orientation"] = info.orientation;
        return py::make_tuple(r, py::object(h));
      },
      py::arg("source"), py::arg("with_orientation") = true, py::arg("options") = DecodeOptions(),
      "Header only: (report, dict of width, height, components, colour space, progressive, arithmetic, EXIF "
      "orientation), the dict None unless report.status is OK. options.max_file_bytes caps what a path may be.");

  m.def(
      "transform_pixels",
      [](const py::object& pixels, const py::object& out, const CropParams& crop, int filter, uint64_t seed,
         uint64_t epoch, uint64_t index) {
        uint8_t* dst = checked_out(out, {crop.out_h, crop.out_w, 3}, "out");
        auto src = py::array_t<uint8_t, py::array::c_style>::ensure(pixels);
        if (!src || src.ndim() != 3 || (src.shape(2) != 3 && src.shape(2) != 4))
          throw py::value_error("pixels must be a uint8 array of shape (H, W, 3) or (H, W, 4)");
        const int h = int(src.shape(0)), w = int(src.shape(1)), c = int(src.shape(2));
        const uint8_t* p = src.data();
        std::string bad;
        {
          py::gil_scoped_release release;
          bad = transform_pixels(p, w, h, c, crop, Filter(filter), seed, epoch, index, dst, thread_workspace().scratch);
        }
        if (!bad.empty()) {
          throw py::value_error("cannot resize an image of " + std::to_string(w) + "x" + std::to_string(h) + ": " +
                                bad);
        }
      },
      py::arg("pixels"), py::arg("out"), py::arg("crop"), py::arg("filter"), py::arg("seed"), py::arg("epoch"),
      py::arg("index"), "Crop + resize + flip an already decoded image (the non-JPEG path) with the same semantics.");

  m.def(
      "sample_crop",
      [](const CropParams& crop, int width, int height, uint64_t seed, uint64_t epoch, uint64_t index) {
        Crop c = sample_crop(crop, width, height, seed, epoch, index);
        return py::make_tuple(py::make_tuple(c.box[0], c.box[1], c.box[2], c.box[3]), c.flip);
      },
      py::arg("crop"), py::arg("width"), py::arg("height"), py::arg("seed"), py::arg("epoch"), py::arg("index"),
      "The (left, top, right, bottom) box and flip a sample gets, without decoding.");

  m.def(
      "uniform",
      [](uint64_t seed, uint64_t epoch, uint64_t index, int count) {
        CounterRng rng(seed, epoch, index);
        std::vector<double> v(size_t(std::max(0, count)));
        for (auto& x : v) x = rng.uniform(0.0, 1.0);
        return v;
      },
      py::arg("seed"), py::arg("epoch"), py::arg("index"), py::arg("count"),
      "The first `count` uniform draws of a sample's generator (for tests and Python-side sampling).");

  m.def(
      "resize",
      [](const py::object& pixels, std::vector<double> box, int out_w, int out_h, int filter, bool flip, bool scalar) {
        auto src = py::array_t<uint8_t, py::array::c_style>::ensure(pixels);
        if (!src || src.ndim() != 3 || (src.shape(2) != 3 && src.shape(2) != 4))
          throw py::value_error("pixels must be a C-contiguous uint8 array of shape (H, W, 3) or (H, W, 4)");
        if (box.size() != 4) throw py::value_error("box must be (left, top, right, bottom)");
        if (out_w < 1 || out_h < 1) throw py::value_error("output size must be positive");
        U8Array out({py::ssize_t(out_h), py::ssize_t(out_w), py::ssize_t(3)});
        const int h = int(src.shape(0)), w = int(src.shape(1)), c = int(src.shape(2));
        Region reg{src.data(), w * c, c, 0, 0, w, h, w, h};
        uint8_t* dst = out.mutable_data();
        bool ok;
        {
          py::gil_scoped_release release;
          thread_local ResampleScratch scratch;
          ok = scalar ? resize_box_scalar(reg, box.data(), out_w, out_h, Filter(filter), flip, dst, out_w * 3, scratch)
                      : resize_box(reg, box.data(), out_w, out_h, Filter(filter), flip, dst, out_w * 3, scratch);
        }
        if (!ok) throw py::value_error("invalid resize box or size");
        return out;
      },
      py::arg("pixels"), py::arg("box"), py::arg("out_w"), py::arg("out_h"), py::arg("filter") = 0,
      py::arg("flip") = false, py::arg("scalar") = false, "Pillow-semantics antialiased resize of box (for tests).");

  // Restart-indexed JPEGs (restart_index.h): the packer's transcode, and a look at a file's index.
  m.def(
      "add_restart_index",
      [](const py::object& data, bool optimize_coding, const DecodeOptions& opts, int tile_width) {
        std::vector<py::buffer_info> keep;
        Source s = to_source(data, "data", &keep);
        if (s.data == nullptr) throw py::type_error("data must be the bytes of a JPEG file, not a path");
        std::vector<uint8_t> out;
        std::string err;
        {
          py::gil_scoped_release release;
          err = add_restart_index(s.data, s.size, opts, optimize_coding, tile_width, &out);
        }
        if (!err.empty()) {
          py::module_ decode = py::module_::import("ipu_cnn.data.decode");
          py::tuple args = py::make_tuple(decode.attr("source_name")(data), "cannot add a restart index: " + err);
          PyErr_SetObject(decode.attr("DecodeError").ptr(), args.ptr());
          throw py::error_already_set();
        }
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("data"), py::arg("optimize_coding") = true, py::arg("options") = DecodeOptions(),
      py::arg("tile_width") = kDefaultRestartTileWidth,
      "Lossless transcode of a JPEG's bytes to baseline whose MCU rows are cut into restart intervals (tiles) of at "
      "most tile_width pixels where the row allows (<= 0: one interval per row), with their offsets in an APP10 "
      "segment, so region decodes read only the tiles they need. Raises DecodeError saying why a file is not "
      "transcoded (keep its original bytes). Already-indexed bytes come back unchanged.");

  m.def(
      "restart_index_info",
      [](const py::object& data) -> py::tuple {
        std::vector<py::buffer_info> keep;
        Source s = to_source(data, "data", &keep);
        if (s.data == nullptr) throw py::type_error("data must be the bytes of a JPEG file, not a path");
        RestartIndex x;
        std::string why;
        if (!find_restart_index(s.data, s.size, &x, &why)) return py::make_tuple(py::none(), why);
        py::dict d;
        d["width"] = x.width;
        d["height"] = x.height;
        d["mcu_width"] = x.mcu_w;
        d["mcu_height"] = x.mcu_h;
        d["restart_interval"] = x.restart_interval;
        d["version"] = x.version;
        d["intervals"] = x.intervals;
        d["mcu_rows"] = x.mcu_rows;
        d["tiles_per_row"] = x.tiles_per_row;
        d["tile_width"] = x.tile_w;
        d["scan_start"] = x.scan_start;
        d["scan_bytes"] = x.scan_bytes;
        d["segment_offset"] = x.segment_pos;
        d["segment_bytes"] = x.segment_bytes;
        d["offsets"] = x.offsets;
        return py::make_tuple(py::object(d), std::string());
      },
      py::arg("data"),
      "(dict, '') describing a valid restart index (frame and MCU size, intervals, scan position and length, the "
      "segment's place and size, each interval's offset from the scan start), or (None, why it is absent or not "
      "trusted).");
  m.def(
      "transform_raw_batch",
      [](const py::object& images, const py::object& out, const CropParams& crop, int filter, uint64_t seed,
         uint64_t epoch, const py::object& indices, int num_threads) {
        auto src = py::array_t<uint8_t, py::array::c_style>::ensure(images);
        if (!src || src.ndim() != 4 || (src.shape(3) != 3 && src.shape(3) != 4) || src.shape(1) < 1 ||
            src.shape(2) < 1)
          throw py::value_error("images must be a C-contiguous uint8 array of shape (N, H, W, 3) or (N, H, W, 4)");
        auto idx = py::array_t<uint64_t, py::array::c_style>::ensure(indices);
        if (!idx || idx.ndim() != 1) throw py::value_error("indices must be a 1-D array of dataset indices");
        if (crop.out_w < 1 || crop.out_h < 1) throw py::value_error("output size must be positive");
        const py::ssize_t n = idx.shape(0);
        uint8_t* dst = checked_out(out, {n, crop.out_h, crop.out_w, 3}, "out");
        std::vector<std::string> errors;
        {
          py::gil_scoped_release release;
          errors = run_raw_batch(src.data(), uint64_t(src.shape(0)), int(src.shape(1)), int(src.shape(2)),
                                 int(src.shape(3)), idx.data(), size_t(n), dst, crop, Filter(filter), seed, epoch,
                                 num_threads > 0 ? num_threads : ThreadPool::available_cpus());
        }
        py::list failures;
        for (py::ssize_t i = 0; i < n; ++i) {
          if (!errors[size_t(i)].empty()) failures.append(py::make_tuple(i, errors[size_t(i)]));
        }
        return failures;
      },
      py::arg("images"), py::arg("out"), py::arg("crop"), py::arg("filter"), py::arg("seed"), py::arg("epoch"),
      py::arg("indices"), py::arg("num_threads"),
      "Transform images[indices[i]] (raw uint8 pixels) into out[i]; returns failures [(position, reason)], each "
      "failed slot zero-filled. Mode 3 (pad) is RandomCrop(image size, padding=pad) + flip, then a resize to out.");

  m.def("jpeg_version", &jpeg_library_version);
  m.def("is_libjpeg_turbo", &is_libjpeg_turbo);
  m.def(
      "io_stats",
      []() {
        const IoStats s = io_stats();
        py::dict d;
        d["opens"] = s.opens;
        d["reads"] = s.reads;
        d["bytes"] = s.bytes;
        return d;
      },
      "Process-wide counters of the reads of sources: open() calls, read/pread calls and bytes read.");
  m.def("reset_io_stats", &reset_io_stats, "Zero the counters io_stats() returns.");
  m.def("drop_cached_files", &drop_cached_files,
        "Close the shard descriptors every thread keeps, now (a shard may have changed, or its copy be released).");
  // What the build recorded of csrc/ (see CMakeLists.txt): a source checkout compares it with its own csrc/.
  m.def("source_digest", []() { return std::string(IPU_CNN_SOURCE_DIGEST); });
  m.def("simd_path", []() { return std::string(resample_simd_path()); },
        "The resampler's fast path in use (IPU_CNN_RESAMPLE_ISA, read once, may pick another this CPU runs).");
  m.def("simd_paths", &resample_simd_paths, "Every resampler path this CPU runs, widest first ('scalar' last).");
  m.def("available_cpus", &ThreadPool::available_cpus);
}
