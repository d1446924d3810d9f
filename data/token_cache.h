// A disk cache for tokenised data, so that a second run skips tokenisation (the 52k Alpaca
// records take seconds to tokenise; loading their cached chunks takes a fraction of that).
//
// One file per entry, named by a 64-bit key that hashes everything the content depends on (the
// tokenizer, the data file's bytes, every setting); the caller builds the key with Hash64. The
// file holds a few int32 arrays:
//
//   offset  size        field
//   0       8           magic "LCTOKENS"
//   8       4           u32 format version (kTokenCacheVersion)
//   12      4           u32 n = number of arrays
//   16      8           u64 key (must equal the key the reader expects: guards against a renamed file)
//   24      8*n         u64 length of each array, in int32 values
//   24+8n   8           u64 checksum: Hash64 of the uncompressed payload
//   32+8n   ...         one zstd frame: the payload, i.e. the arrays' values one after another (LE)
//
// Files are written with write_file_atomic (temporary name, then rename), so a killed run leaves
// no half-written entry. A file that is short, has the wrong magic / version / key, does not
// decompress to exactly the announced size, or fails the checksum is reported on stderr and
// treated as a miss: the caller rebuilds it. A cache is never trusted over a rebuild.
//
// Also here: the small file / zstd / hashing helpers that the data readers share.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lolcats {

class Tokenizer;

constexpr uint32_t kTokenCacheVersion = 1;

// FNV-1a, 64 bit: simple, stable across platforms, and fast enough for the ~100 MB we hash.
// Not cryptographic: it identifies content, it does not defend against an adversary.
struct Hash64 {
  uint64_t h = 0xcbf29ce484222325ull;
  Hash64& bytes(const void* p, size_t n);
  Hash64& u64(uint64_t v);  // as 8 little-endian bytes
  // Length first, so that ("ab", "c") and ("a", "bc") hash differently.
  Hash64& str(const std::string& s) { return u64(s.size()).bytes(s.data(), s.size()); }
};

// Identity of a tokenizer for cache keys, from its public API only: every token's spelling and
// special flag, BOS/EOS, adds_bos, and the ids of a probe text that exercises the pre-tokenizer
// (digits, contractions, whitespace runs, non-Latin text) -- two tokenizers with the same
// vocabulary can still split text differently (SmolLM2's digit splitting vs plain GPT-2).
uint64_t tokenizer_fingerprint(const Tokenizer& tok);

// The whole file; one clear error naming it when it cannot be read.
std::string read_file(const std::string& path);
// Whether `bytes` starts with the zstd frame magic 28 B5 2F FD.
bool is_zstd(const std::string& bytes);
// Decompresses one or more concatenated zstd frames with the streaming API (so a frame that does
// not record its content size works too). A corrupt or truncated stream is one error naming `what`.
std::string zstd_decompress(const std::string& bytes, const std::string& what);
// `bytes` decompressed when it is zstd, else unchanged.
std::string decompress_if_zstd(std::string bytes, const std::string& what);

// Writes an entry (creating the folder when missing).
void write_token_cache(const std::string& path, uint64_t key, const std::vector<std::vector<int32_t>>& arrays);
// Fills `arrays` and returns true on a valid entry for `key`; false when the file is absent
// (silently) or unusable (with a warning on stderr saying why).
bool read_token_cache(const std::string& path, uint64_t key, std::vector<std::vector<int32_t>>& arrays);

}  // namespace lolcats
