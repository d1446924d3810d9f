// The files every program reads when it is not told otherwise, relative to the repository root
// (where `make` puts the default model and the README runs the commands). Defined once: the apps'
// flags and the tests name these.
#pragma once

namespace lolcats {

// SmolLM2-135M-Instruct, Q4_1 GGUF (scripts/get_model.sh, `make model`).
constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
// The original 52k Stanford Alpaca, 52,002 records (see ../shared/data/SOURCES.md).
constexpr const char* kDefaultAlpaca = "../shared/data/alpaca_original_52k.jsonl.zst";
// The zero-shot and 5-shot evaluation sets (nn/eval/tasks.h).
constexpr const char* kDefaultEvalDir = "../shared/data/eval";

}  // namespace lolcats
