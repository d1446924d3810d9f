#include "data/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "tensor/bf16.h"

namespace lolcats {

// ---- ggml types: name, elements per block, bytes per block (ggml.c type_traits) ------------------
namespace {

struct TypeTraits {
  const char* name;
  uint32_t block;      // elements per block (1 for plain types)
  uint32_t type_size;  // bytes per block
};

// Indexed by ggml type id; ids that ggml no longer uses (4, 5, 31-33, 36-38) have a null name.
const TypeTraits kTypes[] = {
    {"F32", 1, 4},      {"F16", 1, 2},        {"Q4_0", 32, 18},      {"Q4_1", 32, 20},
    {nullptr, 0, 0},    {nullptr, 0, 0},      {"Q5_0", 32, 22},      {"Q5_1", 32, 24},
    {"Q8_0", 32, 34},   {"Q8_1", 32, 40},     {"Q2_K", 256, 84},     {"Q3_K", 256, 110},
    {"Q4_K", 256, 144}, {"Q5_K", 256, 176},   {"Q6_K", 256, 210},    {"Q8_K", 256, 292},
    {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
    {"IQ4_NL", 32, 18}, {"IQ3_S", 256, 110},  {"IQ2_S", 256, 82},    {"IQ4_XS", 256, 136},
    {"I8", 1, 1},       {"I16", 1, 2},        {"I32", 1, 4},         {"I64", 1, 8},
    {"F64", 1, 8},      {"IQ1_M", 256, 56},   {"BF16", 1, 2},        {nullptr, 0, 0},
    {nullptr, 0, 0},    {nullptr, 0, 0},      {"TQ1_0", 256, 54},    {"TQ2_0", 256, 66},
    {nullptr, 0, 0},    {nullptr, 0, 0},      {nullptr, 0, 0},       {"MXFP4", 32, 17},
    {"NVFP4", 64, 36},  {"Q1_0", 128, 18},
};
constexpr uint32_t kNumTypes = sizeof(kTypes) / sizeof(kTypes[0]);

const TypeTraits* traits(uint32_t type) {
  return type < kNumTypes && kTypes[type].name ? &kTypes[type] : nullptr;
}

// GGUF metadata value types.
enum : uint32_t {
  UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64
};
const char* const kValueNames[] = {"UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                   "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
constexpr uint32_t kNumValueTypes = 13;

// Bytes of a scalar value type (0 for STRING and ARRAY).
size_t scalar_size(uint32_t t) {
  switch (t) {
    case UINT8: case INT8: case BOOL: return 1;
    case UINT16: case INT16: return 2;
    case UINT32: case INT32: case FLOAT32: return 4;
    case UINT64: case INT64: case FLOAT64: return 8;
    default: return 0;
  }
}
bool is_int(uint32_t t) { return t <= INT32 || t == BOOL || t == UINT64 || t == INT64; }
bool is_float(uint32_t t) { return t == FLOAT32 || t == FLOAT64; }

// Bounds-checked reads from the map: every read first ENSUREs that its bytes exist, so a truncated
// or corrupt file stops with a message instead of reading past the mapping. `where` names the
// part of the file being read (set by the caller), for the message.
struct Cursor {
  const uint8_t* base;
  size_t size;
  size_t pos;
  const char* path;
  std::string where;

  size_t left() const { return size - pos; }
  void need(size_t n, const char* what) const {
    ENSURE(n <= left(), "%s: file ends inside %s of %s (needs %zu bytes at offset %zu, %zu left; truncated?)",
           path, what, where.c_str(), n, pos, left());
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T x;
    std::memcpy(&x, base + pos, sizeof(T));  // memcpy: the map need not be aligned for T
    pos += sizeof(T);
    return x;
  }
  // A string's length is checked against the bytes left before anything is allocated.
  std::string str(const char* what) {
    uint64_t n = get<uint64_t>(what);
    ENSURE(n <= left(), "%s: %s of %s claims %llu bytes but only %zu are left in the file (truncated or corrupt)",
           path, what, where.c_str(), (unsigned long long)n, left());
    std::string s(reinterpret_cast<const char*>(base + pos), size_t(n));
    pos += size_t(n);
    return s;
  }
  void skip_str(const char* what) {
    uint64_t n = get<uint64_t>(what);
    ENSURE(n <= left(), "%s: %s of %s claims %llu bytes but only %zu are left in the file (truncated or corrupt)",
           path, what, where.c_str(), (unsigned long long)n, left());
    pos += size_t(n);
  }
  int64_t integer(uint32_t t) {
    switch (t) {
      case UINT8: return get<uint8_t>("a value");
      case INT8: return get<int8_t>("a value");
      case UINT16: return get<uint16_t>("a value");
      case INT16: return get<int16_t>("a value");
      case UINT32: return get<uint32_t>("a value");
      case INT32: return get<int32_t>("a value");
      case BOOL: return get<uint8_t>("a value") != 0;
      case INT64: return get<int64_t>("a value");
      default: {
        uint64_t v = get<uint64_t>("a value");
        ENSURE(v <= uint64_t(std::numeric_limits<int64_t>::max()), "%s: %s holds %llu, which does not fit in int64",
               path, where.c_str(), (unsigned long long)v);
        return int64_t(v);
      }
    }
  }
  double real(uint32_t t) {
    if (t == FLOAT32) return get<float>("a value");
    if (t == FLOAT64) return get<double>("a value");
    return double(integer(t));
  }
};

}  // namespace

const char* ggml_type_name(uint32_t type) {
  const TypeTraits* t = traits(type);
  return t ? t->name : "unknown";
}

int64_t GGUFTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at open not to overflow
  return n;
}

// ---- opening: map, then parse header, metadata, tensor infos; validate everything --------------
GGUFFile::GGUFFile(const std::string& path) : path_(path), file_(path) { parse(); }

void GGUFFile::parse() {
  const char* p = path_.c_str();
  Cursor c{file_.data(), file_.size(), 0, p, "the header"};
  // Header.
  ENSURE(file_.size() >= 4 && std::memcmp(c.base, "GGUF", 4) == 0,
         "%s is not a GGUF file (it does not start with the magic \"GGUF\"; %zu bytes)", p, file_.size());
  c.pos = 4;
  version_ = c.get<uint32_t>("the version");
  ENSURE((version_ & 0xFFFF) != 0, "%s: big-endian GGUF files are not supported", p);
  ENSURE(version_ == 2 || version_ == 3,
         "%s: unsupported GGUF version %u (this reader handles versions 2 and 3)", p, version_);
  uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  uint64_t n_kv = c.get<uint64_t>("the metadata count");
  // Smallest possible entries: a kv pair is 8 (key length) + 4 (type) + 1 (u8 value) bytes, a
  // tensor info 8 + 4 + 4 + 8. Absurd counts are rejected before anything is reserved.
  ENSURE(n_kv <= c.left() / 13, "%s: metadata count %llu cannot fit in the %zu bytes left (truncated or corrupt)",
         p, (unsigned long long)n_kv, c.left());
  ENSURE(n_tensors <= c.left() / 24, "%s: tensor count %llu cannot fit in the %zu bytes left (truncated or corrupt)",
         p, (unsigned long long)n_tensors, c.left());

  // Metadata: record where each value lies, skipping over it (and so validating its extent).
  for (uint64_t i = 0; i < n_kv; i++) {
    c.where = strfmt("metadata entry %llu", (unsigned long long)i);
    std::string key = c.str("the key");
    c.where = "metadata key '" + key + "'";
    ENSURE(!kvs_.count(key), "%s: metadata key '%s' appears twice", p, key.c_str());
    Value v;
    v.type = c.get<uint32_t>("the value type");
    ENSURE(v.type < kNumValueTypes, "%s: %s has unknown value type %u", p, c.where.c_str(), v.type);
    if (v.type == ARRAY) {
      v.elem_type = c.get<uint32_t>("the array element type");
      v.count = c.get<uint64_t>("the array length");
      ENSURE(v.elem_type < kNumValueTypes && v.elem_type != ARRAY,
             "%s: %s is an array of unsupported element type %u", p, c.where.c_str(), v.elem_type);
      size_t min_size = v.elem_type == STRING ? 8 : scalar_size(v.elem_type);
      ENSURE(v.count <= c.left() / min_size,
             "%s: %s claims %llu %s elements, more than the %zu bytes left in the file can hold (truncated or corrupt)",
             p, c.where.c_str(), (unsigned long long)v.count, kValueNames[v.elem_type], c.left());
      v.offset = c.pos;
      if (v.elem_type == STRING)
        for (uint64_t j = 0; j < v.count; j++) c.skip_str("a string element");
      else
        c.pos += size_t(v.count) * min_size;  // fits: checked above
    } else {
      v.offset = c.pos;
      if (v.type == STRING) {
        c.skip_str("the string value");
      } else {
        c.need(scalar_size(v.type), "the value");
        c.pos += scalar_size(v.type);
      }
    }
    kvs_[key] = v;
    key_order_.push_back(key);
  }

  // Tensor infos.
  uint32_t alignment = 32;  // GGUF_DEFAULT_ALIGNMENT
  if (has("general.alignment")) {
    const Value& v = kvs_.at("general.alignment");
    ENSURE(v.type == UINT32, "%s: general.alignment is %s, not UINT32", p, type_str(v).c_str());
    Cursor a{c.base, c.size, v.offset, p, "general.alignment"};
    alignment = a.get<uint32_t>("the value");
    ENSURE(alignment != 0 && (alignment & (alignment - 1)) == 0,
           "%s: general.alignment %u is not a power of two", p, alignment);
  }
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < n_tensors; i++) {
    c.where = strfmt("tensor info %llu", (unsigned long long)i);
    GGUFTensorInfo t;
    t.name = c.str("the name");
    c.where = "tensor info '" + t.name + "'";
    const char* name = t.name.c_str();
    ENSURE(!tensor_index_.count(t.name), "%s: tensor %s appears twice", p, name);
    uint32_t n_dims = c.get<uint32_t>("the dimension count");
    ENSURE(n_dims <= 4, "%s: tensor %s has %u dimensions (GGUF allows at most 4)", p, name, n_dims);
    t.shape.assign(n_dims, 0);
    for (uint32_t d = 0; d < n_dims; d++) {
      uint64_t ne = c.get<uint64_t>("a dimension");
      ENSURE(ne <= uint64_t(std::numeric_limits<int64_t>::max()), "%s: tensor %s has dimension %llu",
             p, name, (unsigned long long)ne);
      t.shape[n_dims - 1 - d] = int64_t(ne);  // ne[0] is the fastest: last in PyTorch order
    }
    t.type = c.get<uint32_t>("the type");
    offsets.push_back(c.get<uint64_t>("the data offset"));
    ENSURE(traits(t.type), "%s: tensor %s has unknown ggml type %u", p, name, t.type);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment after the tensor infos.
  size_t data_start = c.pos + (alignment - c.pos % alignment) % alignment;
  size_t data_size = data_start < file_.size() ? file_.size() - data_start : 0;
  for (size_t i = 0; i < tensors_.size(); i++) {
    GGUFTensorInfo& t = tensors_[i];
    const char* name = t.name.c_str();
    const TypeTraits& tt = *traits(t.type);
    bool empty = false;
    for (int64_t d : t.shape) empty |= d == 0;
    int64_t n = 1;
    for (int64_t d : t.shape) {
      ENSURE(empty || n <= std::numeric_limits<int64_t>::max() / d, "%s: tensor %s: element count overflows", p, name);
      n *= empty ? 0 : d;
    }
    // Quantised blocks run along ne[0] (a row), so a row must hold whole blocks.
    int64_t row = t.shape.empty() ? 1 : t.shape.back();
    ENSURE(row % tt.block == 0,
           "%s: tensor %s: row length %lld (numel %lld) is not a multiple of the %s block size %u",
           p, name, (long long)row, (long long)n, tt.name, tt.block);
    uint64_t blocks = uint64_t(n) / tt.block, off = offsets[i];
    ENSURE(off % alignment == 0, "%s: tensor %s: data offset %llu is not a multiple of the alignment %u",
           p, name, (unsigned long long)off, alignment);
    ENSURE(off <= data_size && blocks <= (data_size - off) / tt.type_size,
           "%s: tensor %s (%s, %llu blocks of %u bytes at data offset %llu) runs past the end of the file "
           "(the data section holds %zu bytes; truncated?)",
           p, name, tt.name, (unsigned long long)blocks, tt.type_size, (unsigned long long)off, data_size);
    t.nbytes = size_t(blocks) * tt.type_size;
    t.data = file_.data() + data_start + off;
  }
}

// ---- metadata getters ------------------------------------------------------------------------------
const GGUFFile::Value& GGUFFile::value(const std::string& key) const {
  auto it = kvs_.find(key);
  ENSURE(it != kvs_.end(), "%s has no metadata key '%s'", path_.c_str(), key.c_str());
  return it->second;
}

std::string GGUFFile::type_str(const Value& v) const {
  std::string s = kValueNames[v.type];
  return v.type == ARRAY ? s + " of " + kValueNames[v.elem_type] : s;
}

#define CURSOR(v, key) Cursor c{file_.data(), file_.size(), (v).offset, path_.c_str(), "metadata key '" + key + "'"}
#define ENSURE_TYPE(ok, v, key, want)                                                          \
  ENSURE(ok, "%s: metadata key '%s' is %s, not %s", path_.c_str(), key.c_str(), type_str(v).c_str(), want)

std::string GGUFFile::get_string(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(v.type == STRING, v, key, "a string");
  CURSOR(v, key);
  return c.str("the string value");
}

int64_t GGUFFile::get_int(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(is_int(v.type), v, key, "an integer");
  CURSOR(v, key);
  return c.integer(v.type);
}

double GGUFFile::get_float(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(is_float(v.type) || is_int(v.type), v, key, "a number");
  CURSOR(v, key);
  return c.real(v.type);
}

bool GGUFFile::get_bool(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(v.type == BOOL, v, key, "a bool");
  CURSOR(v, key);
  return c.integer(BOOL) != 0;
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(v.type == ARRAY && v.elem_type == STRING, v, key, "an array of strings");
  CURSOR(v, key);
  std::vector<std::string> out(size_t(v.count));  // count validated at open
  for (std::string& s : out) s = c.str("a string element");
  return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(v.type == ARRAY && is_int(v.elem_type), v, key, "an array of integers");
  CURSOR(v, key);
  std::vector<int64_t> out(size_t(v.count));
  for (int64_t& x : out) x = c.integer(v.elem_type);
  return out;
}

std::vector<double> GGUFFile::get_float_array(const std::string& key) const {
  const Value& v = value(key);
  ENSURE_TYPE(v.type == ARRAY && (is_float(v.elem_type) || is_int(v.elem_type)), v, key, "an array of numbers");
  CURSOR(v, key);
  std::vector<double> out(size_t(v.count));
  for (double& x : out) x = c.real(v.elem_type);
  return out;
}

#undef CURSOR
#undef ENSURE_TYPE

// ---- tensors ---------------------------------------------------------------------------------------
const GGUFTensorInfo& GGUFFile::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  ENSURE(it != tensor_index_.end(), "%s has no tensor named '%s'", path_.c_str(), name.c_str());
  return tensors_[it->second];
}

std::vector<std::string> GGUFFile::tensor_names() const {
  std::vector<std::string> out;
  for (const GGUFTensorInfo& t : tensors_) out.push_back(t.name);
  return out;
}

static uint16_t u16_at(const uint8_t* p) {
  uint16_t x;
  std::memcpy(&x, p, 2);
  return x;
}

// Dequantisation (ggml-quants.c dequantize_row_*). A block covers 32 consecutive elements of a row:
//   Q8_0: f16 d, int8 q[32]            x[j] = d * q[j]
//   Q4_0: f16 d, u8 qs[16]             x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d, f16 m, u8 qs[16]      x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
// d has 11 significant bits and q at most 8, so d*q is exact in f32: the only rounding is Q4_1's
// "+ m", and a fused multiply-add rounds the same way. Results are therefore bit-identical to
// ggml's and to the gguf Python package's.
Tensor GGUFFile::load_f32(const std::string& name) const {
  const GGUFTensorInfo& t = tensor(name);
  GGUFType type = GGUFType(t.type);
  bool supported = type == GGUFType::F32 || type == GGUFType::F16 || type == GGUFType::BF16 ||
                   type == GGUFType::Q8_0 || type == GGUFType::Q4_0 || type == GGUFType::Q4_1;
  ENSURE(supported,
         "%s: tensor %s has type %s, which this reader does not dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
         path_.c_str(), name.c_str(), ggml_type_name(t.type));
  Tensor out = Tensor::empty(Shape(t.shape));
  float* y = out.f32();
  const uint8_t* src = t.data;
  const int64_t n = t.numel();
  const int64_t nb = n / 32;
  const bool par = n >= (1 << 16);  // small tensors: a parallel region costs more than it saves
  switch (type) {
    case GGUFType::F32:
      if (n) std::memcpy(y, src, size_t(n) * 4);
      break;
    case GGUFType::F16:
#pragma omp parallel for if (par)
      for (int64_t i = 0; i < n; i++) y[i] = f16_to_f32(u16_at(src + 2 * i));
      break;
    case GGUFType::BF16:
#pragma omp parallel for if (par)
      for (int64_t i = 0; i < n; i++) y[i] = bf16_to_f32(u16_at(src + 2 * i));
      break;
    case GGUFType::Q8_0:
#pragma omp parallel for if (par)
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = src + 34 * b;
        float d = f16_to_f32(u16_at(blk));
        for (int j = 0; j < 32; j++) y[32 * b + j] = d * float(int8_t(blk[2 + j]));
      }
      break;
    case GGUFType::Q4_0:
#pragma omp parallel for if (par)
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = src + 18 * b;
        float d = f16_to_f32(u16_at(blk));
        for (int j = 0; j < 16; j++) {
          y[32 * b + j] = d * float((blk[2 + j] & 15) - 8);
          y[32 * b + j + 16] = d * float((blk[2 + j] >> 4) - 8);
        }
      }
      break;
    case GGUFType::Q4_1:
#pragma omp parallel for if (par)
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = src + 20 * b;
        float d = f16_to_f32(u16_at(blk)), m = f16_to_f32(u16_at(blk + 2));
        for (int j = 0; j < 16; j++) {
          y[32 * b + j] = d * float(blk[4 + j] & 15) + m;
          y[32 * b + j + 16] = d * float(blk[4 + j] >> 4) + m;
        }
      }
      break;
  }
  return out;
}

}  // namespace lolcats
