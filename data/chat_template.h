// Chat templates: a conversation as the one string the instruct model was trained on.
// Hugging Face stores these as Jinja templates (tokenizer_config.json, or the GGUF key
// tokenizer.chat_template); we do not run Jinja, we write out the two templates our models use:
//
//   chatml (SmolLM2-Instruct):
//     <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n
//                                        (only when the first message is not a system message)
//     <|im_start|>{role}\n{content}<|im_end|>\n          for each message
//     <|im_start|>assistant\n                            with add_generation_prompt
//   llama3 (Llama 3 Instruct):
//     <|begin_of_text|>                                  before the first message
//     <|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>    for each
//     <|start_header_id|>assistant<|end_header_id|>\n\n  with add_generation_prompt
// The special tokens inside the result are recognised by Tokenizer::encode.
#pragma once
#include <string>
#include <vector>

namespace lolcats {

enum class ChatFormat { chatml, llama3 };

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

// Which of the formats a Jinja template text is, by its markers (<|im_start|> -> chatml,
// <|start_header_id|> -> llama3); an error for any other template.
ChatFormat chat_format_for(const std::string& jinja_template_text);

// The Jinja chat template stored with a model checkpoint ("" when it has none): the GGUF key
// tokenizer.chat_template, or a Hugging Face folder's tokenizer_config.json / chat_template.jinja.
std::string load_chat_template(const std::string& model_path);

}  // namespace lolcats
