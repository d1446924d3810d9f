// Byte-level BPE tokenizer (GPT-2 style), as used by SmolLM2 and Llama 3.
//
// Encoding text into token ids goes in four steps:
//   1. Added tokens. Special tokens such as <|im_start|> are cut out of the text first (at each
//      point the longest one that matches), so that a chat template's markers become single ids
//      and are never split by the steps below.
//   2. Pre-tokenisation. Each stretch of text between added tokens is cut into "words" by one or
//      more regular expressions (Hugging Face's pre_tokenizer: e.g. " world", "123", "\n\n").
//      BPE never merges across these cuts, so a token never spans a space-then-letter boundary
//      that the regex separated.
//   3. Bytes as characters. A word's UTF-8 bytes are spelled with 256 printable characters (the
//      GPT-2 byte-to-unicode table: ' ' is written 'Ġ', '\n' is 'Ċ'), which is how the
//      vocabulary stores its tokens. So any text can be encoded without an unknown token (a
//      byte whose one-byte token the vocabulary lacks is dropped, as Hugging Face does).
//   4. Merges. Starting from one symbol per byte, repeatedly join the adjacent pair whose merge
//      rule comes first in the merges list (lowest rank), until no adjacent pair has a rule. The
//      symbols left are the tokens.
// Decoding maps each id back to its bytes and concatenates them. A single token may hold part of
// a UTF-8 character (an emoji is 4 bytes, often 2+ tokens): decode returns raw bytes, so the parts
// join correctly when decoded together.
//
// Loading: Hugging Face tokenizer.json (from_json), or the tokenizer stored in a GGUF file
// (from_gguf, through from_vocab). Only what these two families use is implemented; anything
// else is a clear error rather than a silently different tokenisation.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lolcats {

class GGUFFile;
struct SplitRegex;  // a compiled PCRE2 pre-tokenizer pattern (tokenizer.cpp)
struct WordCache;   // word -> ids, shared by copies of a Tokenizer (tokenizer.cpp)

class Tokenizer {
 public:
  // tokenizer.json of a Hugging Face model folder. BOS/EOS come from tokenizer_config.json beside
  // it when present (bos_token / eos_token), else from the post_processor (BOS) and common names.
  static Tokenizer from_json(const std::string& path);
  // The pieces a GGUF file stores: tokens in the byte-level spelling, merges as "a b",
  // token_types (llama.cpp: 1 normal, 3 control = special, 4 user-defined = added, not special),
  // and `pre`, llama.cpp's name of the pre-tokenizer ("smollm", "gpt2", "llama-bpe", ...).
  static Tokenizer from_vocab(std::vector<std::string> tokens, std::vector<std::string> merges,
                              std::vector<int32_t> token_types, int bos_id, int eos_id,
                              const std::string& pre);
  // tokenizer.ggml.* keys of a GGUF file (tokenizer.ggml.model must be "gpt2").
  static Tokenizer from_gguf(const GGUFFile& f);
  // The tokenizer of a model checkpoint: a .gguf file, or a Hugging Face folder's tokenizer.json.
  static Tokenizer from_model(const std::string& model_path);

  // `text` must be valid UTF-8. Special tokens written in the text become their ids.
  std::vector<int32_t> encode(const std::string& text, bool add_bos = false) const;
  // Raw bytes (not necessarily valid UTF-8 when `ids` ends inside a character).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
  int eos_id() const { return eos_id_; }
  bool adds_bos() const { return adds_bos_; }  // whether the model expects BOS at the start
  int vocab_size() const { return int(spelling_.size()); }
  // The token as the vocabulary spells it ("Ġthe" for " the"; added tokens: their text).
  std::string token(int id) const;
  int id_of(const std::string& token) const;  // by that spelling; -1 if absent
  bool is_special(int id) const;

 private:
  struct Merge {
    int32_t rank;    // position in the merges list: lower merges first
    int32_t merged;  // id of the joined token
  };
  struct Added {
    std::string text;
    int32_t id;
  };
  Tokenizer() = default;
  // Fills the lookup tables from spelling_ / special_ / added_ and checks the merges.
  void build(const std::vector<std::pair<std::string, std::string>>& merges, const std::string& where);
  void add_token(int32_t id, const std::string& spelling, bool special, bool added);
  void set_pre_tokenizer_by_name(const std::string& pre, const std::string& where);
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;  // no added tokens
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;  // through the cache
  void bpe(std::string_view word, std::vector<int32_t>& out) const;          // BPE on one word

  std::vector<std::string> spelling_;  // (V) vocabulary spelling; "" for an id with no token
  std::vector<std::string> bytes_;     // (V) what each id decodes to
  std::vector<uint8_t> special_;       // (V) 1: special (dropped by decode(skip_special=true))
  std::unordered_map<std::string, int32_t> by_spelling_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::array<int32_t, 256> byte_token_{};       // id of the one-byte token of each byte
  std::vector<Added> added_;                    // matched in the text before pre-tokenisation
  std::array<std::vector<int32_t>, 256> added_by_first_byte_;  // indices into added_, longest first
  std::vector<std::shared_ptr<const SplitRegex>> pre_;  // applied in order, each to every piece
  std::shared_ptr<WordCache> cache_;
  bool ignore_merges_ = false;  // Llama 3: a word that is itself a token is taken whole
  bool adds_bos_ = false;
  int bos_id_ = -1, eos_id_ = -1;
};

}  // namespace lolcats
