#include "data/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tensor/bf16.h"

namespace lolcats {

using json = nlohmann::json;

int64_t SafeTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static size_t safetensors_dtype_size(const std::string& t) {
  if (t == "F64" || t == "I64" || t == "U64") return 8;
  if (t == "F32" || t == "I32" || t == "U32") return 4;
  if (t == "F16" || t == "BF16" || t == "I16" || t == "U16") return 2;
  if (t == "I8" || t == "U8" || t == "BOOL" || t == "F8_E4M3" || t == "F8_E5M2") return 1;
  return 0;
}

// A JSON array of integers. Checked element by element first: a number too large for 64 bits is
// parsed as a float, and converting that to an integer would be undefined behaviour.
template <typename I>
static std::vector<I> integers(const json& j, const char* file, const char* tensor, const char* field) {
  ENSURE(j.is_array(), "%s: tensor %s: %s is not an array", file, tensor, field);
  std::vector<I> out;
  for (const json& x : j) {
    ENSURE(x.is_number_integer(), "%s: tensor %s: %s holds a value that is not a 64-bit integer", file,
           tensor, field);
    out.push_back(x.get<I>());
  }
  return out;
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path), file_(path) { parse(); }

void SafeTensorsFile::parse() {
  const char* p = path_.c_str();
  const size_t size = file_.size();
  ENSURE(size >= 8, "%s is not a safetensors file: only %zu bytes", p, size);
  const uint8_t* base = file_.data();
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every machine we build for
  ENSURE(header_len <= size - 8, "%s: header length %llu runs past the end of the file (%zu bytes)",
        p, (unsigned long long)header_len, size);
  json header;
  try {
    header = json::parse(base + 8, base + 8 + header_len);
  } catch (const json::exception& e) {
    fail(__FILE__, __LINE__, strfmt("%s: malformed safetensors header: %s", p, e.what()));
  }
  ENSURE(header.is_object(), "%s: safetensors header is not a JSON object", p);
  const uint8_t* data = base + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      ENSURE(it->is_object(), "%s: __metadata__ is not a JSON object", p);
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    const char* name = it.key().c_str();
    const json& e = *it;
    ENSURE(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          "%s: tensor %s lacks dtype, shape or data_offsets", p, name);
    SafeTensorInfo info;
    try {
      info.dtype = e["dtype"].get<std::string>();
      info.shape = integers<int64_t>(e["shape"], p, name, "shape");
      auto off = integers<uint64_t>(e["data_offsets"], p, name, "data_offsets");
      ENSURE(off.size() == 2 && off[0] <= off[1], "%s: tensor %s has bad data_offsets", p, name);
      ENSURE(off[1] <= data_size,
            "%s: tensor %s ends at byte %llu but the file holds only %zu bytes of data (truncated?)",
            p, name, (unsigned long long)off[1], data_size);
      info.data = data + off[0];
      info.nbytes = size_t(off[1] - off[0]);
    } catch (const json::exception& ex) {
      fail(__FILE__, __LINE__, strfmt("%s: tensor %s: %s", p, name, ex.what()));
    }
    size_t es = safetensors_dtype_size(info.dtype);
    ENSURE(es > 0, "%s: tensor %s has unknown dtype %s", p, name, info.dtype.c_str());
    size_t need = es;  // bytes the shape needs, checked for overflow (a corrupt shape can be huge)
    for (int64_t d : info.shape) {
      ENSURE(d >= 0, "%s: tensor %s has a negative dimension", p, name);
      ENSURE(!__builtin_mul_overflow(need, size_t(d), &need), "%s: tensor %s: shape overflows", p, name);
    }
    ENSURE(need == info.nbytes, "%s: tensor %s: shape and dtype need %zu bytes, data_offsets give %zu",
          p, name, need, info.nbytes);
    tensors_[it.key()] = info;
  }
}

const SafeTensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  ENSURE(it != tensors_.end(), "%s has no tensor named %s", path_.c_str(), name.c_str());
  return it->second;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

// Element i of a tensor stored as `dtype`, as a double.
static double element(const SafeTensorInfo& t, int64_t i) {
  const char* d = static_cast<const char*>(t.data);
  auto rd = [&](auto zero) {
    decltype(zero) x;
    std::memcpy(&x, d + i * sizeof(x), sizeof(x));
    return x;
  };
  if (t.dtype == "F32") return rd(float());
  if (t.dtype == "F64") return rd(double());
  if (t.dtype == "BF16") return bf16_to_f32(rd(uint16_t()));
  if (t.dtype == "F16") return f16_to_f32(rd(uint16_t()));
  if (t.dtype == "I32") return rd(int32_t());
  if (t.dtype == "I64") return double(rd(int64_t()));
  fail(__FILE__, __LINE__, "cannot convert safetensors dtype " + t.dtype + " to a number");
}

std::vector<double> SafeTensorsFile::load_f64(const std::string& name) const {
  const SafeTensorInfo& t = info(name);
  std::vector<double> out(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); i++) out[i] = element(t, i);
  return out;
}

void SafeTensorsFile::load_into(const std::string& name, Tensor& dst) const {
  ENSURE(has(name), "%s: missing tensor %s", path_.c_str(), name.c_str());
  const SafeTensorInfo& t = info(name);
  bool same_type = (t.dtype == "F32" && dst.dtype() == DType::f32) ||
                   (t.dtype == "BF16" && dst.dtype() == DType::bf16) ||
                   (t.dtype == "I32" && dst.dtype() == DType::i32);
  if (same_type && t.shape.size() <= 4 && Shape(t.shape) == dst.shape()) {
    // As stored: straight from the mapped file into dst (on the CPU or the device), no copy between.
    dst.copy_from(Tensor::borrow(const_cast<void*>(t.data), dst.shape(), dst.dtype()), path_ + ": tensor " + name);
    return;
  }
  Tensor host = load(name);  // converted to f32 (or i32), one tensor at a time
  if (host.shape() == dst.shape() && host.dtype() != dst.dtype()) host = host.to(Device::cpu, dst.dtype());
  dst.copy_from(host, path_ + ": tensor " + name);
}

Tensor SafeTensorsFile::load(const std::string& name) const {
  const SafeTensorInfo& t = info(name);
  ENSURE(t.shape.size() <= 4, "%s: tensor %s has %zu dimensions (at most 4 supported)",
        path_.c_str(), name.c_str(), t.shape.size());
  Shape shape(t.shape);
  bool integer = t.dtype == "I32" || t.dtype == "I64";
  Tensor out = Tensor::empty(shape, integer ? DType::i32 : DType::f32);
  if (t.dtype == "F32" || t.dtype == "I32") {
    std::memcpy(out.data(), t.data, t.nbytes);
  } else if (integer) {
    for (int64_t i = 0; i < t.numel(); i++) {
      double v = element(t, i);
      ENSURE(v >= INT32_MIN && v <= INT32_MAX, "%s: tensor %s: I64 value %.0f does not fit in i32",
            path_.c_str(), name.c_str(), v);
      out.i32()[i] = int32_t(v);
    }
  } else {
    for (int64_t i = 0; i < t.numel(); i++) out.f32()[i] = float(element(t, i));
  }
  return out;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  ENSURE(f, "cannot write %s: %s", tmp.c_str(), std::strerror(errno));
  size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  bool ok = written == bytes.size() && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail(__FILE__, __LINE__, strfmt("writing %s failed after %zu of %zu bytes: %s (disk full?)",
                                    path.c_str(), written, bytes.size(), std::strerror(err)));
  }
  ENSURE(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename %s to %s: %s", tmp.c_str(),
        path.c_str(), std::strerror(errno));
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Tensors on the cuda device are written from a host copy.
  std::vector<std::pair<std::string, Tensor>> host;
  for (const auto& [name, t] : tensors) host.push_back({name, t.to(Device::cpu)});
  size_t offset = 0;
  for (const auto& [name, t] : host) {
    const char* dt = t.dtype() == DType::f32 ? "F32" : t.dtype() == DType::bf16 ? "BF16" : "I32";
    std::vector<int64_t> shape(t.shape().dims, t.shape().dims + t.ndim());
    header[name] = {{"dtype", dt}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so tensor data starts 8-byte aligned
  std::string bytes(8, '\0');
  uint64_t n = h.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += h;
  for (const auto& kv : host)
    bytes.append(static_cast<const char*>(kv.second.data()), kv.second.nbytes());
  write_file_atomic(path, bytes);
}

}  // namespace lolcats
