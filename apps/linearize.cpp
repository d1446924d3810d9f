// ./linearize: attention transfer + LoRA on a Llama-family model (the main job). Not built yet.
#include "apps/not_yet.h"

int main(int argc, char** argv) {
  return lolcats::not_yet(argc, argv, "linearize",
                          "turn a Llama into a LoLCATs linear-attention model",
                          "planned: the `./linearize` issue, after the Llama and LoLCATs-attention issues");
}
