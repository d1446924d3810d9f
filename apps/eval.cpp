// ./eval: perplexity, attention MSE and zero-shot tasks. Not built yet.
#include "apps/not_yet.h"

int main(int argc, char** argv) {
  return lolcats::not_yet(argc, argv, "eval", "evaluate a model (perplexity, zero-shot tasks)",
                          "planned: after the `./linearize` issue");
}
