// libFuzzer target: Tokenizer::from_json (data/tokenizer.h) on arbitrary bytes. Loading either
// succeeds or throws lolcats::Error; a loaded tokenizer must then encode a few strings into ids
// inside its vocabulary and decode them, again returning or throwing lolcats::Error. Anything else
// (a crash, a sanitizer report, another exception type) is a bug. Run with `make fuzz`; a small
// tokenizer.json (e.g. build/fixtures/llama3_tokenizer/tokenizer.json) is a good seed.
#include "data/tokenizer.h"
#include "tensor/check.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lolcats;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input(data, size, "_tokenizer.json");
  try {
    Tokenizer tok = Tokenizer::from_json(path);
    for (const char* text : {"", "Hello world, it's 2024!", "  \t\n x<|im_start|>y<|eot_id|>", "日本語 👍🏽 é",
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
      try {
        std::vector<int32_t> ids = tok.encode(text, tok.adds_bos());
        for (int32_t id : ids)
          if (id < 0 || id >= tok.vocab_size()) abort();  // encode produced an id it cannot decode
        tok.decode(ids);
        tok.decode(ids, true);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
