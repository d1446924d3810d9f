// ./generate: recurrent, constant-memory generation from a linearized run. Not built yet.
#include "apps/not_yet.h"

int main(int argc, char** argv) {
  return lolcats::not_yet(argc, argv, "generate", "generate text from a (linearized) model",
                          "planned: the Llama-on-CPU issue");
}
