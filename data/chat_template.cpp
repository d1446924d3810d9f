#include "data/chat_template.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/gguf.h"
#include "tensor/check.h"

namespace lolcats {

// Jinja's `trim` filter is Python's str.strip(): it removes leading and trailing characters that
// Python counts as whitespace, which includes some beyond ASCII (no-break space, ideographic
// space, ...). The list: Python's str.isspace() over all code points.
static bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The code point that starts at s[i] and its length in bytes (1 for a stray byte).
static uint32_t codepoint_at(const std::string& s, size_t i, size_t* len) {
  uint8_t c = uint8_t(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; k++) cp = cp << 6 | (uint8_t(s[i + k]) & 0x3F);
  *len = n;
  return cp;
}

static std::string python_strip(const std::string& s) {
  size_t begin = 0, len = 0;
  while (begin < s.size() && is_python_space(codepoint_at(s, begin, &len))) begin += len;
  size_t end = begin;  // one past the last non-space character
  for (size_t i = begin; i < s.size(); i += len)
    if (!is_python_space(codepoint_at(s, i, &len))) end = i + len;
  return s.substr(begin, end - begin);
}

std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) {
  std::string out;
  if (format == ChatFormat::chatml) {
    // SmolLM2-Instruct's template (GGUF tokenizer.chat_template), which gives the model its
    // default identity when the conversation does not start with a system message.
    if (!messages.empty() && messages[0].role != "system")
      out += "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  // Llama 3 Instruct: `message['content'] | trim` strips each content; the BOS token is written
  // by the template itself, before the first message only.
  for (size_t i = 0; i < messages.size(); i++) {
    if (i == 0) out += "<|begin_of_text|>";
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + python_strip(messages[i].content) +
           "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

ChatFormat chat_format_for(const std::string& jinja_template_text) {
  if (jinja_template_text.find("<|im_start|>") != std::string::npos) return ChatFormat::chatml;
  if (jinja_template_text.find("<|start_header_id|>") != std::string::npos) return ChatFormat::llama3;
  fail(__FILE__, __LINE__,
       strfmt("unknown chat template (neither ChatML's <|im_start|> nor Llama 3's <|start_header_id|>): %.200s",
              jinja_template_text.c_str()));
}

std::string load_chat_template(const std::string& model_path) {
  if (model_path.size() > 5 && model_path.compare(model_path.size() - 5, 5, ".gguf") == 0) {
    GGUFFile f(model_path);
    return f.has("tokenizer.chat_template") ? f.get_string("tokenizer.chat_template") : "";
  }
  std::ifstream cfg(model_path + "/tokenizer_config.json");
  if (cfg.good()) {
    auto j = nlohmann::json::parse(cfg, nullptr, false);
    if (!j.is_discarded() && j.contains("chat_template") && j["chat_template"].is_string())
      return j["chat_template"].get<std::string>();
  }
  std::ifstream jinja(model_path + "/chat_template.jinja");
  return jinja.good() ? std::string(std::istreambuf_iterator<char>(jinja), {}) : "";
}

}  // namespace lolcats
