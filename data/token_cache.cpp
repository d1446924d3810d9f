#include "data/token_cache.h"

#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "data/safetensors.h"  // write_file_atomic
#include "data/tokenizer.h"
#include "tensor/check.h"

namespace lolcats {

// The file layout stores raw little-endian values (memcpy of the host's): say so at compile time.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token_cache.cpp assumes a little-endian host");

static constexpr char kMagic[8] = {'L', 'C', 'T', 'O', 'K', 'E', 'N', 'S'};

Hash64& Hash64::bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t x = h;
  for (size_t i = 0; i < n; i++) x = (x ^ b[i]) * 0x100000001b3ull;
  h = x;
  return *this;
}

Hash64& Hash64::u64(uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = uint8_t(v >> (8 * i));
  return bytes(b, 8);
}

uint64_t tokenizer_fingerprint(const Tokenizer& tok) {
  static const char* kProbe =
      "Hello world! It's 2024: 1234567 items cost $3.50.\n\n  \tTHEY'LL say we'd've   known...\r\n"
      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x91\x8d def f(x):\n    return x\n";
  Hash64 h;
  h.u64(uint64_t(tok.vocab_size())).u64(uint64_t(int64_t(tok.bos_id()))).u64(uint64_t(int64_t(tok.eos_id())));
  h.u64(tok.adds_bos());
  for (int i = 0; i < tok.vocab_size(); i++) h.str(tok.token(i)).u64(tok.is_special(i));
  std::vector<int32_t> ids = tok.encode(kProbe, false);
  h.u64(ids.size()).bytes(ids.data(), ids.size() * sizeof(int32_t));
  return h.h;
}

std::string read_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  ENSURE(f, "cannot open %s: %s", path.c_str(), std::strerror(errno));
  std::string bytes;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) bytes.append(buf, n);
  ENSURE(!std::ferror(f.get()), "error reading %s: %s", path.c_str(), std::strerror(errno));
  return bytes;
}

bool is_zstd(const std::string& bytes) {
  return bytes.size() >= 4 && uint8_t(bytes[0]) == 0x28 && uint8_t(bytes[1]) == 0xB5 &&
         uint8_t(bytes[2]) == 0x2F && uint8_t(bytes[3]) == 0xFD;
}

std::string zstd_decompress(const std::string& bytes, const std::string& what) {
  std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds(ZSTD_createDStream(), ZSTD_freeDStream);
  ENSURE(ds, "%s: out of memory creating a zstd decoder", what.c_str());
  std::string out;
  unsigned long long known = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  if (known != ZSTD_CONTENTSIZE_UNKNOWN && known != ZSTD_CONTENTSIZE_ERROR && known < (1ull << 34))
    out.reserve(size_t(known));  // a hint only: the loop below does not rely on it
  std::vector<char> buf(ZSTD_DStreamOutSize());
  ZSTD_inBuffer in{bytes.data(), bytes.size(), 0};
  size_t ret = 0;  // 0 exactly when the last frame ended
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    ret = ZSTD_decompressStream(ds.get(), &o, &in);
    ENSURE(!ZSTD_isError(ret), "%s: corrupt zstd data near compressed byte %zu: %s", what.c_str(), in.pos,
           ZSTD_getErrorName(ret));
    out.append(buf.data(), o.pos);
  }
  // All input consumed: flush what the decoder still holds (a frame's last block may be pending).
  while (ret != 0) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    ret = ZSTD_decompressStream(ds.get(), &o, &in);
    ENSURE(!ZSTD_isError(ret), "%s: corrupt zstd data: %s", what.c_str(), ZSTD_getErrorName(ret));
    out.append(buf.data(), o.pos);
    ENSURE(ret == 0 || o.pos > 0, "%s: truncated zstd data (the file ends inside a frame, after %zu "
           "decompressed bytes): re-download or re-compress it", what.c_str(), out.size());
  }
  return out;
}

std::string decompress_if_zstd(std::string bytes, const std::string& what) {
  return is_zstd(bytes) ? zstd_decompress(bytes, what) : std::move(bytes);
}

void write_token_cache(const std::string& path, uint64_t key, const std::vector<std::vector<int32_t>>& arrays) {
  std::string payload;
  for (const auto& a : arrays) payload.append(reinterpret_cast<const char*>(a.data()), a.size() * sizeof(int32_t));
  std::string out(kMagic, 8);
  auto put = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  uint32_t version = kTokenCacheVersion, n = uint32_t(arrays.size());
  put(&version, 4), put(&n, 4), put(&key, 8);
  for (const auto& a : arrays) {
    uint64_t len = a.size();
    put(&len, 8);
  }
  uint64_t sum = Hash64().bytes(payload.data(), payload.size()).h;
  put(&sum, 8);
  size_t header = out.size();
  out.resize(header + ZSTD_compressBound(payload.size()));
  // Level 3 (zstd's default): ~4x smaller than raw int32 and fast; higher levels cost seconds.
  size_t z = ZSTD_compress(&out[header], out.size() - header, payload.data(), payload.size(), 3);
  ENSURE(!ZSTD_isError(z), "token cache %s: zstd compression failed: %s", path.c_str(), ZSTD_getErrorName(z));
  out.resize(header + z);
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  ENSURE(!ec, "cannot create the token cache folder %s: %s", dir.c_str(), ec.message().c_str());
  write_file_atomic(path, out);
}

bool read_token_cache(const std::string& path, uint64_t key, std::vector<std::vector<int32_t>>& arrays) {
  if (!std::filesystem::exists(path)) return false;
  auto bad = [&path](const std::string& why) {
    std::fprintf(stderr, "warning: token cache %s is unusable (%s); rebuilding it\n", path.c_str(), why.c_str());
    return false;
  };
  std::string f;
  try {
    f = read_file(path);
  } catch (const Error& e) {
    return bad(e.what());
  }
  size_t at = 0;
  auto get = [&](void* p, size_t n) {
    if (at + n > f.size()) return false;
    std::memcpy(p, f.data() + at, n);
    at += n;
    return true;
  };
  char magic[8];
  uint32_t version = 0, n = 0;
  uint64_t file_key = 0, sum = 0;
  if (!get(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) return bad("not a token cache file");
  if (!get(&version, 4) || version != kTokenCacheVersion)
    return bad(strfmt("format version %u, expected %u", version, kTokenCacheVersion));
  if (!get(&n, 4) || n > 1024) return bad("bad array count");
  if (!get(&file_key, 8)) return bad("truncated header");
  if (file_key != key) return bad("its key does not match its name");
  std::vector<uint64_t> lens(n);
  uint64_t total = 0;
  for (uint64_t& len : lens) {
    if (!get(&len, 8) || len > (1ull << 40)) return bad("truncated header");
    total += len;
  }
  if (!get(&sum, 8)) return bad("truncated header");
  // The frame must take exactly the rest of the file and hold exactly the announced bytes.
  const char* frame = f.data() + at;
  size_t frame_size = f.size() - at;
  if (ZSTD_findFrameCompressedSize(frame, frame_size) != frame_size) return bad("truncated or padded payload");
  std::string payload(total * sizeof(int32_t), '\0');
  size_t got = ZSTD_decompress(payload.data(), payload.size(), frame, frame_size);
  if (ZSTD_isError(got)) return bad(std::string("payload does not decompress: ") + ZSTD_getErrorName(got));
  if (got != payload.size()) return bad("payload has the wrong size");
  if (Hash64().bytes(payload.data(), payload.size()).h != sum) return bad("checksum mismatch");
  arrays.assign(n, {});
  size_t off = 0;
  for (uint32_t i = 0; i < n; i++) {
    arrays[i].resize(lens[i]);
    std::memcpy(arrays[i].data(), payload.data() + off, lens[i] * sizeof(int32_t));
    off += lens[i] * sizeof(int32_t);
  }
  return true;
}

}  // namespace lolcats
