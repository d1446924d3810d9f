// ZIP archives of stored (uncompressed) entries: what torch.save writes since PyTorch 1.6
// (data/torch_pt.h reads and writes those files on top of this).
//
// Layout (PKWARE APPNOTE): for each entry a local header (signature PK\3\4, 30 bytes + name +
// extra) and its bytes; then the central directory (one PK\1\2 record per entry: sizes, CRC-32,
// offset of the local header); then the end record PK\5\6 (entry count, directory size and
// offset), preceded by the ZIP64 end record and its locator when a count, size or offset needs 64
// bits. torch.save sets flag bit 3 (sizes in a descriptor after the data, zeros in the local
// header), so sizes are taken from the central directory, never from the local headers.
//
// The reader works on bytes the caller keeps alive (a memory-mapped file) and checks every size
// and offset against them before touching anything: a truncated or corrupt archive is one error
// naming the file. Compressed or encrypted entries are refused when read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lolcats {

// CRC-32 (IEEE 802.3, reflected, as zip and zlib compute it), continued from `crc`.
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

struct ZipEntry {
  std::string name;
  uint16_t method = 0;   // 0 stored, 8 deflate, ...
  uint16_t flags = 0;    // bit 0: encrypted
  uint32_t crc = 0;
  uint64_t size = 0;     // uncompressed
  uint64_t csize = 0;    // as stored
  uint64_t data = 0;     // offset of the entry's first byte in the archive
};

class ZipReader {
 public:
  // `bytes` (the whole archive) must outlive the reader; `path` names it in errors.
  ZipReader(const uint8_t* bytes, size_t size, const std::string& path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // null when absent
  // The bytes of a stored entry; with verify_crc its CRC-32 is checked (the whole entry is read).
  const uint8_t* data(const ZipEntry& e, bool verify_crc) const;

 private:
  const uint8_t* bytes_;
  size_t size_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

// Builds an archive of stored entries in memory, each entry's data aligned to 64 bytes (as
// torch.save does, so that a reader may map tensors in place).
class ZipWriter {
 public:
  void add(const std::string& name, const std::string& bytes);
  std::string finish();  // the archive (central directory and end record appended)

 private:
  std::string out_;
  std::string directory_;
  size_t count_ = 0;
};

}  // namespace lolcats
