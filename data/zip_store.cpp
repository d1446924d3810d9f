#include "data/zip_store.h"

#include <cstring>

#include "tensor/check.h"

namespace lolcats {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalSize = 30, kCentralSize = 46, kEndSize = 22, kAlign = 64;

uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return uint32_t(u16(p)) | uint32_t(u16(p + 2)) << 16; }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }

void put16(std::string& s, uint32_t v) { s += char(v & 0xff), s += char(v >> 8 & 0xff); }
void put32(std::string& s, uint32_t v) { put16(s, v & 0xffff), put16(s, v >> 16); }

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

ZipReader::ZipReader(const uint8_t* b, size_t size, const std::string& path)
    : bytes_(b), size_(size), path_(path) {
  const char* f = path_.c_str();
  ENSURE(size >= kEndSize, "%s is not a zip archive: only %zu bytes", f, size);
  // The end record is the last PK\5\6 in the final 22 + 65535 bytes (it may carry a comment).
  size_t lo = size > kEndSize + 65535 ? size - kEndSize - 65535 : 0, end_rec = SIZE_MAX;
  for (size_t i = size - kEndSize + 1; i-- > lo;)
    if (u32(b + i) == kEndSig) {
      end_rec = i;
      break;
    }
  ENSURE(end_rec != SIZE_MAX, "%s: no zip end record (truncated, or not a zip archive)", f);
  uint64_t count = u16(b + end_rec + 10), dir_size = u32(b + end_rec + 12), dir_off = u32(b + end_rec + 16);
  if (end_rec >= 20 && u32(b + end_rec - 20) == kZip64LocatorSig) {
    uint64_t z = u64(b + end_rec - 20 + 8);
    ENSURE(z <= size && size - z >= 56 && u32(b + z) == kZip64EndSig,
           "%s: the ZIP64 end record (at byte %llu) is missing or corrupt", f, (unsigned long long)z);
    count = u64(b + z + 32), dir_size = u64(b + z + 40), dir_off = u64(b + z + 48);
  }
  ENSURE(dir_off <= size && dir_size <= size - dir_off,
         "%s: the zip directory (%llu bytes at byte %llu) lies outside the file (%zu bytes): truncated?", f,
         (unsigned long long)dir_size, (unsigned long long)dir_off, size);
  ENSURE(count <= dir_size / kCentralSize, "%s: %llu zip entries cannot fit a directory of %llu bytes", f,
         (unsigned long long)count, (unsigned long long)dir_size);
  const uint8_t* p = b + dir_off;
  const uint8_t* dir_end = p + dir_size;
  for (uint64_t i = 0; i < count; i++) {
    ENSURE(size_t(dir_end - p) >= kCentralSize && u32(p) == kCentralSig,
           "%s: zip directory record %llu is corrupt", f, (unsigned long long)i);
    ZipEntry e;
    e.flags = u16(p + 8), e.method = u16(p + 10), e.crc = u32(p + 16);
    e.csize = u32(p + 20), e.size = u32(p + 24);
    const size_t nlen = u16(p + 28), xlen = u16(p + 30), clen = u16(p + 32);
    uint64_t local = u32(p + 42);
    ENSURE(size_t(dir_end - p) - kCentralSize >= nlen + xlen + clen,
           "%s: zip directory record %llu runs past the directory", f, (unsigned long long)i);
    e.name.assign(reinterpret_cast<const char*>(p + kCentralSize), nlen);
    // ZIP64 extra field (id 1): the 64-bit values of the saturated fields above, in this order.
    const uint8_t* x = p + kCentralSize + nlen;
    for (size_t q = 0; q + 4 <= xlen;) {
      const size_t id = u16(x + q), len = u16(x + q + 2);
      ENSURE(q + 4 + len <= xlen, "%s: entry %s: its extra field runs past its record", f, e.name.c_str());
      size_t r = q + 4;
      auto wide = [&](uint64_t& v) {
        if (v != 0xffffffffu) return;
        ENSURE(r + 8 <= q + 4 + len, "%s: entry %s: ZIP64 field too short", f, e.name.c_str());
        v = u64(x + r), r += 8;
      };
      if (id == 1) wide(e.size), wide(e.csize), wide(local);
      q += 4 + len;
    }
    // The data begins after the local header's own name and extra field (torch pads the latter).
    ENSURE(local <= size && size - local >= kLocalSize && u32(b + local) == kLocalSig,
           "%s: entry %s: no local header at byte %llu (truncated?)", f, e.name.c_str(), (unsigned long long)local);
    e.data = local + kLocalSize + u16(b + local + 26) + u16(b + local + 28);
    ENSURE(e.data <= size && e.csize <= size - e.data,
           "%s: entry %s: %llu bytes at byte %llu run past the end of the file (%zu bytes): truncated?", f,
           e.name.c_str(), (unsigned long long)e.csize, (unsigned long long)e.data, size);
    index_[e.name] = entries_.size();
    entries_.push_back(e);
    p += kCentralSize + nlen + xlen + clen;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipReader::data(const ZipEntry& e, bool verify_crc) const {
  const char* f = path_.c_str();
  ENSURE(!(e.flags & 1), "%s: entry %s is encrypted", f, e.name.c_str());
  ENSURE(e.method == 0,
         "%s: entry %s is compressed (zip method %u); torch.save stores entries uncompressed, so "
         "the archive was rewritten by another tool: unzip it and zip it again with `zip -0`",
         f, e.name.c_str(), unsigned(e.method));
  ENSURE(e.csize == e.size, "%s: entry %s: stored size %llu differs from its size %llu", f, e.name.c_str(),
         (unsigned long long)e.csize, (unsigned long long)e.size);
  const uint8_t* d = bytes_ + e.data;
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  verify_crc = false;  // `make fuzz`: a mutated entry must reach its parser, not stop at the checksum
#endif
  ENSURE(!verify_crc || crc32(d, size_t(e.size)) == e.crc, "%s: entry %s fails its CRC-32 check (corrupt file)",
         f, e.name.c_str());
  return d;
}

void ZipWriter::add(const std::string& name, const std::string& bytes) {
  ENSURE(out_.size() < 0xffffffffu && bytes.size() < 0xffffffffu - out_.size() && count_ < 0xffff,
         "zip entry %s: an archive past 4 GiB or 65535 entries needs ZIP64, which this writer does not write",
         name.c_str());
  const uint32_t local = uint32_t(out_.size()), crc = crc32(bytes.data(), bytes.size());
  // An extra field ("FB", as torch.save writes it) pads the header so that the data is aligned.
  const size_t pad = (kAlign - (out_.size() + kLocalSize + name.size() + 4) % kAlign) % kAlign;
  auto header = [&](std::string& s, bool central) {
    put32(s, central ? kCentralSig : kLocalSig);
    if (central) put16(s, 20);  // version made by
    put16(s, 20);               // version needed: 2.0
    put16(s, 0), put16(s, 0);   // flags, method (stored)
    put16(s, 0), put16(s, 0);   // time, date
    put32(s, crc), put32(s, uint32_t(bytes.size())), put32(s, uint32_t(bytes.size()));
    put16(s, uint32_t(name.size())), put16(s, central ? 0 : uint32_t(4 + pad));
    if (central) put16(s, 0), put16(s, 0), put16(s, 0), put32(s, 0), put32(s, local);  // comment, disk, attrs
    s += name;
  };
  header(out_, false);
  out_ += "FB", put16(out_, uint32_t(pad)), out_.append(pad, 'Z');
  out_ += bytes;
  header(directory_, true);
  count_++;
}

std::string ZipWriter::finish() {
  ENSURE(out_.size() + directory_.size() < 0xffffffffu, "zip archive past 4 GiB: needs ZIP64");
  const uint32_t dir_off = uint32_t(out_.size());
  std::string out = std::move(out_);
  out += directory_;
  put32(out, kEndSig), put16(out, 0), put16(out, 0);
  put16(out, uint32_t(count_)), put16(out, uint32_t(count_));
  put32(out, uint32_t(directory_.size())), put32(out, dir_off), put16(out, 0);
  out_.clear(), directory_.clear(), count_ = 0;
  return out;
}

}  // namespace lolcats
