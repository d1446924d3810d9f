// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp, built and run by `make fuzz`).
//
// The readers take a path, so each input is written to one temporary file per process (in
// /dev/shm when it exists: a RAM disk, so writing costs nothing next to parsing).
//
// The readers memory-map their file. A real mapping is rounded up to whole pages, so a read a few
// bytes past the end of the file would hit zeros instead of failing, and AddressSanitizer cannot
// see inside a mapping at all. So this file replaces mmap/munmap, for the input file only, with a
// malloc'd copy of exactly the file's bytes: ASan then reports any read past the end. Every other
// mapping goes to the real mmap.
#pragma once
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

namespace fuzz {

struct Input {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  std::set<void*> copies;  // our fake mappings, to free in munmap
};
inline Input& input() {
  static Input in;
  return in;
}

// Writes the fuzzer's bytes to this process's input file and returns its path.
inline const std::string& write_input(const uint8_t* data, size_t size, const char* suffix) {
  Input& in = input();
  if (in.path.empty()) {
    struct stat st;
    const char* dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    in.path = std::string(dir) + "/lolcats_fuzz_" + std::to_string(getpid()) + suffix;
    std::atexit([] { unlink(input().path.c_str()); });
  }
  int fd = open(in.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, data, size) != ssize_t(size)) abort();  // the harness itself failed
  struct stat st;
  fstat(fd, &st);
  in.dev = st.st_dev;
  in.ino = st.st_ino;
  close(fd);
  return in.path;
}

}  // namespace fuzz

extern "C" void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  using Fn = void* (*)(void*, size_t, int, int, int, off_t);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "mmap"));
  struct stat st;
  fuzz::Input& in = fuzz::input();
  if (fd >= 0 && addr == nullptr && off == 0 && prot == PROT_READ && fstat(fd, &st) == 0 &&
      st.st_dev == in.dev && st.st_ino == in.ino && len > 0) {
    void* p = std::malloc(len);
    if (!p || pread(fd, p, len, 0) != ssize_t(len)) abort();
    in.copies.insert(p);
    return p;
  }
  return real(addr, len, prot, flags, fd, off);
}

extern "C" int munmap(void* addr, size_t len) {
  using Fn = int (*)(void*, size_t);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "munmap"));
  if (fuzz::input().copies.erase(addr)) {
    std::free(addr);
    return 0;
  }
  return real(addr, len);
}
