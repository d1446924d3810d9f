#include "data/torch_pt.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "data/safetensors.h"
#include "tensor/bf16.h"

namespace lolcats {

namespace {

// ---- element types ---------------------------------------------------------------------------------
struct DtypeInfo {
  const char* storage;  // the typed storage class in `torch` (pickled as a global)
  const char* torch;    // the torch.dtype's name (pickled as a global by _rebuild_tensor_v3)
  const char* name;     // safetensors-style name, as TorchTensorInfo::dtype
  size_t size;
};
const DtypeInfo kDtypes[] = {
    {"FloatStorage", "float32", "F32", 4}, {"BFloat16Storage", "bfloat16", "BF16", 2},
    {"HalfStorage", "float16", "F16", 2},  {"DoubleStorage", "float64", "F64", 8},
    {"LongStorage", "int64", "I64", 8},    {"IntStorage", "int32", "I32", 4},
    {"ShortStorage", "int16", "I16", 2},   {"CharStorage", "int8", "I8", 1},
    {"ByteStorage", "uint8", "U8", 1},     {"BoolStorage", "bool", "BOOL", 1}};

const DtypeInfo* dtype_by_storage(const std::string& s) {
  for (const DtypeInfo& d : kDtypes)
    if (s == d.storage) return &d;
  return nullptr;
}
const DtypeInfo* dtype_by_torch_name(const std::string& s) {
  for (const DtypeInfo& d : kDtypes)
    if (s == d.torch) return &d;
  return nullptr;
}
const DtypeInfo* dtype_by_name(const std::string& s) {
  for (const DtypeInfo& d : kDtypes)
    if (s == d.name) return &d;
  return nullptr;
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

// ---- the pickle machine ------------------------------------------------------------------------------
// Objects live in a pool owned by the machine and refer to each other by pointer: a pickle may
// build cycles (a dict set into itself) and arbitrarily deep nesting, and neither leaks nor
// recurses when the pool is freed. Nothing walks the object graph recursively.
struct Obj {
  enum Kind { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor, opaque };
  Kind kind = opaque;
  int64_t i = 0;                   // integer, boolean
  double f = 0;                    // floating
  std::string s, s2;               // string; global: module, name; storage: archive entry
  std::vector<Obj*> items;         // tuple, list; dict: key, value, key, value, ...
  const DtypeInfo* dtype = nullptr;  // storage: null when untyped (bytes)
  uint64_t capacity = 0;           // storage: bytes tensors may use
  const uint8_t* bytes = nullptr;  // storage: its first byte
  TorchTensorInfo t;               // tensor
};

const char* kind_name(Obj::Kind k) {
  static const char* names[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict", "global",
                                "storage", "tensor", "object"};
  return names[k];
}

class Unpickler {
 public:
  Unpickler(const uint8_t* p, size_t n, const std::string& file, const ZipReader& zip, const std::string& prefix)
      : p_(p), n_(n), f_(file.c_str()), zip_(zip), prefix_(prefix) {}

  Obj* run() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = *take(1);
      switch (op) {
        case 0x80: {  // PROTO
          const int v = *take(1);
          ENSURE(v <= 5, "%s: data.pkl: pickle protocol %d is newer than any Python writes", f_, v);
          break;
        }
        case 0x95: take(8); break;  // FRAME (a length hint)
        case '.': return pop(at);   // STOP
        case '(': marks_.push_back(stack_.size()); break;
        case '0': pop(at); break;
        case '1': pop_mark(at); break;
        case '2': push(top(at)); break;
        case 'N': push(make(Obj::none)); break;
        case 0x88: case 0x89: push(integer(op == 0x88, Obj::boolean)); break;
        case 'J': push(integer(int32_t(u32(take(4))))); break;
        case 'K': push(integer(*take(1))); break;
        case 'M': push(integer(u16(take(2)))); break;
        case 0x8a: push(integer(long_int(*take(1), at))); break;
        case 0x8b: push(integer(long_int(u32(take(4)), at))); break;
        case 'G': {  // BINFLOAT: big-endian double
          const uint8_t* b = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; k++) bits = bits << 8 | b[k];
          Obj* o = make(Obj::floating);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'X': case 'B': push(string(u32(take(4)))); break;             // BINUNICODE, BINBYTES
        case 0x8c: case 'U': case 'C': push(string(*take(1))); break;      // SHORT_BINUNICODE/STRING/BYTES
        case 0x8d: case 0x8e: push(string(u64(take(8)))); break;           // BINUNICODE8, BINBYTES8
        case 'T': {                                                         // BINSTRING
          const int32_t len = int32_t(u32(take(4)));
          ENSURE(len >= 0, "%s: data.pkl: negative string length at byte %zu", f_, at);
          push(string(uint64_t(len)));
          break;
        }
        case ')': push(make(Obj::tuple)); break;
        case 't': push(sequence(Obj::tuple, pop_mark(at))); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          std::vector<Obj*> items(size_t(op - 0x84));
          for (size_t k = items.size(); k-- > 0;) items[k] = pop(at);
          push(sequence(Obj::tuple, items));
          break;
        }
        case ']': push(make(Obj::list)); break;
        case 'l': push(sequence(Obj::list, pop_mark(at))); break;
        case 'a': {  // APPEND
          Obj* v = pop(at);
          append(top(at), {v});
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Obj*> items = pop_mark(at);
          append(top(at), items);
          break;
        }
        case '}': push(make(Obj::dict)); break;
        case 'd': {
          Obj* d = make(Obj::dict);
          set_items(d, pop_mark(at), at);
          push(d);
          break;
        }
        case 's': {  // SETITEM
          Obj* v = pop(at);
          Obj* k = pop(at);
          set_items(top(at), {k, v}, at);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Obj*> items = pop_mark(at);
          set_items(top(at), items, at);
          break;
        }
        case 'c': {  // GLOBAL: "module\nname\n"
          Obj* g = make(Obj::global);
          g->s = line(at);
          g->s2 = line(at);
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Obj* name = pop(at);
          Obj* module = pop(at);
          ENSURE(name->kind == Obj::string && module->kind == Obj::string,
                 "%s: data.pkl: STACK_GLOBAL at byte %zu needs two strings", f_, at);
          Obj* g = make(Obj::global);
          g->s = module->s, g->s2 = name->s;
          push(g);
          break;
        }
        case 'R': {  // REDUCE: callable(*args)
          Obj* args = pop(at);
          Obj* callable = pop(at);
          push(reduce(callable, args, at));
          break;
        }
        case 0x81: pop(at), pop(at), push(make(Obj::opaque)); break;  // NEWOBJ: cls.__new__(cls, *args)
        case 'b': pop(at), top(at); break;  // BUILD: the object's state (a tensor or dict needs none)
        case 'q': memo_[*take(1)] = top(at); break;                       // BINPUT
        case 'r': memo_[u32(take(4))] = top(at); break;                   // LONG_BINPUT
        case 0x94: memo_[uint32_t(memo_.size())] = top(at); break;        // MEMOIZE
        case 'h': push(get(*take(1), at)); break;                         // BINGET
        case 'j': push(get(u32(take(4)), at)); break;                     // LONG_BINGET
        case 'Q': push(persistent_load(pop(at), at)); break;              // BINPERSID
        default:
          fail(__FILE__, __LINE__,
               strfmt("%s: data.pkl: unknown pickle opcode 0x%02x at byte %zu (not a state dict of "
                      "tensors as torch.save writes it?)", f_, unsigned(op), at));
      }
    }
  }

 private:
  static uint16_t u16(const uint8_t* b) { return uint16_t(b[0] | b[1] << 8); }
  static uint32_t u32(const uint8_t* b) { return uint32_t(u16(b)) | uint32_t(u16(b + 2)) << 16; }
  static uint64_t u64(const uint8_t* b) { return uint64_t(u32(b)) | uint64_t(u32(b + 4)) << 32; }

  const uint8_t* take(uint64_t k) {
    ENSURE(k <= n_ - pos_, "%s: data.pkl is truncated: %llu bytes wanted at byte %zu of %zu", f_,
           (unsigned long long)k, pos_, n_);
    const uint8_t* r = p_ + pos_;
    pos_ += size_t(k);
    return r;
  }
  std::string line(size_t at) {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    ENSURE(nl, "%s: data.pkl: unterminated GLOBAL at byte %zu", f_, at);
    const size_t len = size_t(static_cast<const uint8_t*>(nl) - (p_ + pos_));
    std::string s(reinterpret_cast<const char*>(take(len)), len);
    take(1);
    return s;
  }
  int64_t long_int(uint64_t nbytes, size_t at) {
    ENSURE(nbytes <= 8, "%s: data.pkl: a %llu-byte integer at byte %zu (at most 8 supported)", f_,
           (unsigned long long)nbytes, at);
    const uint8_t* b = take(nbytes);
    uint64_t v = 0;
    for (size_t k = nbytes; k-- > 0;) v = v << 8 | b[k];
    if (nbytes > 0 && nbytes < 8 && (b[nbytes - 1] & 0x80)) v |= ~uint64_t(0) << (8 * nbytes);  // sign
    return int64_t(v);
  }

  Obj* make(Obj::Kind k) {
    pool_.push_back(std::make_unique<Obj>());
    pool_.back()->kind = k;
    return pool_.back().get();
  }
  Obj* integer(int64_t v, Obj::Kind k = Obj::integer) {
    Obj* o = make(k);
    o->i = v;
    return o;
  }
  Obj* string(uint64_t len) {
    Obj* o = make(Obj::string);
    o->s.assign(reinterpret_cast<const char*>(take(len)), size_t(len));
    return o;
  }
  Obj* sequence(Obj::Kind k, const std::vector<Obj*>& items) {
    Obj* o = make(k);
    o->items = items;
    return o;
  }

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Obj* o) { stack_.push_back(o); }
  Obj* pop(size_t at) {
    ENSURE(stack_.size() > floor(), "%s: data.pkl: stack underflow at byte %zu", f_, at);
    Obj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj* top(size_t at) {
    ENSURE(stack_.size() > floor(), "%s: data.pkl: stack underflow at byte %zu", f_, at);
    return stack_.back();
  }
  std::vector<Obj*> pop_mark(size_t at) {
    ENSURE(!marks_.empty(), "%s: data.pkl: no MARK for the opcode at byte %zu", f_, at);
    std::vector<Obj*> items(stack_.begin() + long(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Obj* get(uint32_t key, size_t at) {
    auto it = memo_.find(key);
    ENSURE(it != memo_.end(), "%s: data.pkl: memo entry %u read before it was written (byte %zu)", f_, key, at);
    return it->second;
  }
  // Lists and dicts hold what is added; any other object (an opaque one, say a defaultdict)
  // accepts and ignores it, as the state dict never depends on it.
  void append(Obj* list, const std::vector<Obj*>& items) {
    if (list->kind == Obj::list) list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void set_items(Obj* d, const std::vector<Obj*>& items, size_t at) {
    ENSURE(items.size() % 2 == 0, "%s: data.pkl: odd number of dict items at byte %zu", f_, at);
    if (d->kind == Obj::dict) d->items.insert(d->items.end(), items.begin(), items.end());
  }

  Obj* reduce(Obj* callable, Obj* args, size_t at) {
    if (callable->kind != Obj::global) return make(Obj::opaque);
    const std::string& m = callable->s;
    const std::string& name = callable->s2;
    if (m == "collections" && name == "OrderedDict") return make(Obj::dict);
    if (m == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_tensor_v3"))
      return rebuild_tensor(args, name == "_rebuild_tensor_v3", at);
    if (m == "torch._utils" && (name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state")) {
      // nn.Parameter(data, requires_grad): the data tensor is what counts
      if (args->kind == Obj::tuple && !args->items.empty() && args->items[0]->kind == Obj::tensor)
        return args->items[0];
    }
    return make(Obj::opaque);
  }

  // ('storage', storage class, key, location, numel): the bytes of archive entry PREFIX/data/key.
  Obj* persistent_load(Obj* pid, size_t at) {
    const std::vector<Obj*>& v = pid->items;
    ENSURE(pid->kind == Obj::tuple && v.size() == 5 && v[0]->kind == Obj::string && v[0]->s == "storage" &&
               v[1]->kind == Obj::global && v[2]->kind == Obj::string && v[4]->kind == Obj::integer,
           "%s: data.pkl: persistent id at byte %zu is not ('storage', class, key, location, numel)", f_, at);
    Obj* st = make(Obj::storage);
    if (v[1]->s2 != "UntypedStorage") {
      st->dtype = dtype_by_storage(v[1]->s2);
      ENSURE(st->dtype, "%s: storage type %s.%s is not supported (float, bfloat16, half, double, long, int, "
             "short, char, byte, bool)", f_, v[1]->s.c_str(), v[1]->s2.c_str());
    }
    st->s = prefix_ + "data/" + v[2]->s;
    const ZipEntry* e = zip_.find(st->s);
    ENSURE(e, "%s: storage %s is not in the archive (no entry %s)", f_, v[2]->s.c_str(), st->s.c_str());
    st->bytes = zip_.data(*e, false);
    const uint64_t elem = st->dtype ? st->dtype->size : 1;
    ENSURE(v[4]->i >= 0 && uint64_t(v[4]->i) <= e->size / elem,
           "%s: storage %s claims %lld elements of %llu bytes, but its entry holds %llu bytes", f_,
           v[2]->s.c_str(), (long long)v[4]->i, (unsigned long long)elem, (unsigned long long)e->size);
    st->capacity = uint64_t(v[4]->i) * elem;
    return st;
  }

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) or
  // _rebuild_tensor_v3(..., hooks, dtype[, metadata]).
  Obj* rebuild_tensor(Obj* args, bool v3, size_t at) {
    const std::vector<Obj*>& a = args->items;
    ENSURE(args->kind == Obj::tuple && a.size() >= (v3 ? 7u : 5u) && a[0]->kind == Obj::storage &&
               a[1]->kind == Obj::integer && a[2]->kind == Obj::tuple && a[3]->kind == Obj::tuple,
           "%s: data.pkl: the tensor built at byte %zu has malformed arguments", f_, at);
    const Obj* st = a[0];
    const DtypeInfo* dt = st->dtype;
    if (v3) {
      ENSURE(a[6]->kind == Obj::global && a[6]->s == "torch" && dtype_by_torch_name(a[6]->s2),
             "%s: data.pkl: the tensor built at byte %zu has an unsupported dtype", f_, at);
      const DtypeInfo* named = dtype_by_torch_name(a[6]->s2);
      ENSURE(!dt || dt == named, "%s: data.pkl: a %s tensor on a %s storage (byte %zu)", f_, named->torch,
             dt->storage, at);
      dt = named;
    }
    ENSURE(dt, "%s: data.pkl: a tensor on an untyped storage without its dtype (byte %zu)", f_, at);
    Obj* o = make(Obj::tensor);
    TorchTensorInfo& t = o->t;
    t.dtype = dt->name;
    t.storage = st->s;
    ENSURE(a[2]->items.size() == a[3]->items.size() && a[2]->items.size() <= 8,
           "%s: data.pkl: the tensor built at byte %zu has %zu sizes and %zu strides (at most 8 dimensions)",
           f_, at, a[2]->items.size(), a[3]->items.size());
    for (size_t d = 0; d < a[2]->items.size(); d++) {
      const Obj* size = a[2]->items[d];
      const Obj* stride = a[3]->items[d];
      ENSURE(size->kind == Obj::integer && stride->kind == Obj::integer && size->i >= 0 && stride->i >= 0,
             "%s: data.pkl: the tensor built at byte %zu has a size or stride that is not a count", f_, at);
      t.shape.push_back(size->i);
      t.strides.push_back(stride->i);
    }
    t.storage_offset = a[1]->i;
    // The elements it spans, [offset, offset + sum (size - 1) stride], must lie in the storage.
    const uint64_t limit = st->capacity / dt->size;
    uint64_t numel = 1, last = uint64_t(t.storage_offset), term = 0;
    bool overflow = t.storage_offset < 0;
    for (size_t d = 0; d < t.shape.size(); d++) {
      overflow |= __builtin_mul_overflow(numel, uint64_t(t.shape[d]), &numel);
      if (t.shape[d] > 0) {
        overflow |= __builtin_mul_overflow(uint64_t(t.shape[d] - 1), uint64_t(t.strides[d]), &term);
        overflow |= __builtin_add_overflow(last, term, &last);
      }
    }
    ENSURE(!overflow && numel <= (uint64_t(1) << 48) && (numel == 0 ? last <= limit : last < limit),
           "%s: data.pkl: a tensor of shape %s, strides %s at offset %lld runs past its storage %s (%llu "
           "elements)", f_, shape_str(t.shape).c_str(), shape_str(t.strides).c_str(),
           (long long)t.storage_offset, st->s.c_str(), (unsigned long long)limit);
    int64_t expect = 1;  // suffix products stay <= numel, so no overflow (an empty tensor is contiguous)
    for (size_t d = t.shape.size(); numel > 0 && d-- > 0;) {
      if (t.shape[d] != 1 && t.strides[d] != expect) t.contiguous = false;
      expect *= t.shape[d];
    }
    t.data = st->bytes + uint64_t(t.storage_offset) * dt->size;
    t.nbytes = size_t(numel * dt->size);
    return o;
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const char* f_;
  const ZipReader& zip_;
  std::string prefix_;  // "NAME/"
  std::vector<std::unique_ptr<Obj>> pool_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;  // stack sizes at each open MARK
  std::map<uint32_t, Obj*> memo_;
};

// The value of string key `key` in a dict (the last one set wins, as in Python), or null.
const Obj* dict_get(const Obj* d, const std::string& key) {
  const Obj* found = nullptr;
  for (size_t k = 0; k + 1 < d->items.size(); k += 2)
    if (d->items[k]->kind == Obj::string && d->items[k]->s == key) found = d->items[k + 1];
  return found;
}

}  // namespace

int64_t TorchTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path), file_(path) { parse(); }

TorchCheckpoint::~TorchCheckpoint() = default;

void TorchCheckpoint::parse() {
  const char* f = path_.c_str();
  const uint8_t* b = file_.data();
  const size_t size = file_.size();
  ENSURE(size < 2 || !(b[0] == 0x80 && b[1] <= 5),
         "%s is a legacy torch.save file (PyTorch < 1.6 format): load it and save it again with a current "
         "PyTorch, which writes the zip format", f);
  ENSURE(size >= 4 && std::memcmp(b, "PK\x03\x04", 4) == 0,
         "%s is not a PyTorch checkpoint (torch.save writes a zip archive; this file does not start with one)", f);
  zip_ = std::make_unique<ZipReader>(b, size, path_);

  // PREFIX/data.pkl, PREFIX being the archive's one folder (torch names it after the file).
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip_->entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      ENSURE(!pkl, "%s: two pickles (%s, %s) in one archive", f, pkl->name.c_str(), e.name.c_str());
      pkl = &e;
    }
  }
  ENSURE(pkl, "%s: a zip archive without a data.pkl: not written by torch.save", f);
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);
  if (const ZipEntry* order = zip_->find(prefix + "byteorder")) {
    const std::string s(reinterpret_cast<const char*>(zip_->data(*order, true)), size_t(order->size));
    ENSURE(s == "little", "%s: byte order \"%s\" (only little-endian checkpoints are read)", f, s.c_str());
  }

  Unpickler vm(zip_->data(*pkl, true), size_t(pkl->size), path_, *zip_, prefix);
  const Obj* top = vm.run();
  ENSURE(top->kind == Obj::dict, "%s: the pickle holds a %s, not a dict of tensors", f, kind_name(top->kind));
  const Obj* sd = top;
  for (const char* key : {"model_state_dict", "state_dict"}) {
    const Obj* inner = dict_get(top, key);
    if (inner && inner->kind == Obj::dict) {
      sd = inner, state_dict_key_ = key;
      break;
    }
  }
  for (size_t k = 0; k + 1 < sd->items.size(); k += 2) {
    const Obj* key = sd->items[k];
    const Obj* value = sd->items[k + 1];
    if (key->kind == Obj::string && value->kind == Obj::tensor) tensors_[key->s] = value->t;
  }
}

const TorchTensorInfo& TorchCheckpoint::info(const std::string& name) const {
  auto it = tensors_.find(name);
  ENSURE(it != tensors_.end(), "%s has no tensor named %s", path_.c_str(), name.c_str());
  return it->second;
}

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const uint8_t* TorchCheckpoint::tensor_bytes(const std::string& name, const TorchTensorInfo& t) const {
  const char* f = path_.c_str();
  ENSURE(t.contiguous, "%s: tensor %s is not contiguous (shape %s, strides %s): save it with .contiguous()", f,
         name.c_str(), shape_str(t.shape).c_str(), shape_str(t.strides).c_str());
  ENSURE(t.shape.size() <= 4, "%s: tensor %s has %zu dimensions (at most 4 supported)", f, name.c_str(),
         t.shape.size());
  if (!verified_.count(t.storage)) {
    zip_->data(*zip_->find(t.storage), true);
    verified_.insert(t.storage);
  }
  return t.data;
}

Tensor TorchCheckpoint::load(const std::string& name) const {
  const TorchTensorInfo& t = info(name);
  const uint8_t* d = tensor_bytes(name, t);
  const int64_t n = t.numel();
  auto rd = [&](auto zero, int64_t i) {
    decltype(zero) x;
    std::memcpy(&x, d + i * int64_t(sizeof(x)), sizeof(x));
    return x;
  };
  const bool integer = t.dtype == "I32" || t.dtype == "I64";
  Tensor out = Tensor::empty(Shape(t.shape), integer ? DType::i32 : DType::f32);
  if (t.dtype == "F32" || t.dtype == "I32") {
    std::memcpy(out.data(), d, t.nbytes);
  } else if (t.dtype == "BF16") {
    for (int64_t i = 0; i < n; i++) out.f32()[i] = bf16_to_f32(rd(uint16_t(), i));
  } else if (t.dtype == "F16") {
    for (int64_t i = 0; i < n; i++) out.f32()[i] = f16_to_f32(rd(uint16_t(), i));
  } else if (t.dtype == "F64") {
    for (int64_t i = 0; i < n; i++) out.f32()[i] = float(rd(double(), i));
  } else if (t.dtype == "I64") {
    for (int64_t i = 0; i < n; i++) {
      const int64_t v = rd(int64_t(), i);
      ENSURE(v >= INT32_MIN && v <= INT32_MAX, "%s: tensor %s: int64 value %lld does not fit in i32",
             path_.c_str(), name.c_str(), (long long)v);
      out.i32()[i] = int32_t(v);
    }
  } else {
    fail(__FILE__, __LINE__, strfmt("%s: tensor %s is %s (f32, bf16, f16, f64, i32 and i64 are read)",
                                    path_.c_str(), name.c_str(), t.dtype.c_str()));
  }
  return out;
}

void TorchCheckpoint::load_into(const std::string& name, Tensor& dst) const {
  const TorchTensorInfo& t = info(name);
  std::vector<int64_t> want(dst.shape().dims, dst.shape().dims + dst.ndim());
  ENSURE(t.shape == want, "%s: tensor %s has shape %s, but %s is expected", path_.c_str(), name.c_str(),
         shape_str(t.shape).c_str(), shape_str(want).c_str());
  const bool same = (t.dtype == "F32" && dst.dtype() == DType::f32) || (t.dtype == "BF16" && dst.dtype() == DType::bf16);
  if (same) {  // straight from the mapping
    const uint8_t* d = tensor_bytes(name, t);
    dst.copy_from(Tensor::borrow(const_cast<uint8_t*>(d), dst.shape(), dst.dtype()), path_ + ": tensor " + name);
    return;
  }
  Tensor host = load(name);
  if (host.dtype() != dst.dtype()) host = host.to(Device::cpu, dst.dtype());
  dst.copy_from(host, path_ + ": tensor " + name);
}

// ---- writing -------------------------------------------------------------------------------------------
namespace {

struct PickleWriter {
  std::string s;
  void op(char c) { s += c; }
  void u32(uint32_t v) {
    for (int k = 0; k < 4; k++) s += char(v >> (8 * k) & 0xff);
  }
  void str(const std::string& v) {  // BINUNICODE
    op('X'), u32(uint32_t(v.size())), s += v;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J'), u32(uint32_t(int32_t(v)));
    } else {  // LONG1, 8 bytes
      op('\x8a'), op(8);
      for (int k = 0; k < 8; k++) s += char(uint64_t(v) >> (8 * k) & 0xff);
    }
  }
  void global(const char* module, const char* name) { op('c'), s += module, s += '\n', s += name, s += '\n'; }
  void ordered_dict() { global("collections", "OrderedDict"), op(')'), op('R'); }
};

}  // namespace

void save_torch_state_dict(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                           const std::string& wrap_key) {
  // The archive's folder is the file's stem, as torch.save names it.
  const size_t slash = path.find_last_of('/');
  std::string stem = path.substr(slash == std::string::npos ? 0 : slash + 1);
  stem = stem.substr(0, stem.find('.'));
  if (stem.empty()) stem = "archive";

  PickleWriter p;
  p.op('\x80'), p.op(2);  // PROTO 2, torch.save's default
  if (!wrap_key.empty()) p.op('}'), p.op('('), p.str(wrap_key);
  p.ordered_dict();
  p.op('(');
  std::vector<std::string> storages;
  for (size_t i = 0; i < tensors.size(); i++) {
    const Tensor host = tensors[i].second.to(Device::cpu);
    const DtypeInfo* dt = dtype_by_name(host.dtype() == DType::f32 ? "F32" : host.dtype() == DType::bf16 ? "BF16" : "I32");
    p.str(tensors[i].first);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('('), p.str("storage"), p.global("torch", dt->storage), p.str(std::to_string(i)), p.str("cpu");
    p.integer(host.numel()), p.op('t'), p.op('Q');  // the storage, by persistent id
    p.integer(0);                                   // storage offset
    std::vector<int64_t> strides(size_t(host.ndim()));
    int64_t stride = 1;
    for (int d = host.ndim(); d-- > 0;) strides[size_t(d)] = stride, stride *= host.size(d);
    p.op('(');
    for (int d = 0; d < host.ndim(); d++) p.integer(host.size(d));
    p.op('t'), p.op('(');
    for (int64_t s : strides) p.integer(s);
    p.op('t');
    p.op('\x89');      // requires_grad = False
    p.ordered_dict();  // backward hooks
    p.op('t'), p.op('R');
    storages.emplace_back(static_cast<const char*>(host.data()), host.nbytes());
  }
  p.op('u');
  if (!wrap_key.empty()) p.op('u');
  p.op('.');

  ZipWriter zip;
  zip.add(stem + "/data.pkl", p.s);  // first: readers take the folder from the first entry
  zip.add(stem + "/byteorder", "little");
  for (size_t i = 0; i < storages.size(); i++) zip.add(stem + "/data/" + std::to_string(i), storages[i]);
  zip.add(stem + "/version", "3\n");
  write_file_atomic(path, zip.finish());
}

}  // namespace lolcats
