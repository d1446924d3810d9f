// Shared by the apps that are not built out yet: they parse --help honestly and say so when run,
// instead of pretending to work.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>

namespace lolcats {

inline int not_yet(int argc, char** argv, const char* name, const char* what, const char* issue) {
  CLI::App app{std::string(name) + ": " + what};
  app.allow_extras();
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr,
               "%s is not implemented yet (%s). What works today: the tensor/autograd stack and its "
               "tests (`make test`) and `./bench matmul`; see README.md, section Status.\n",
               name, issue);
  return 2;
}

}  // namespace lolcats
