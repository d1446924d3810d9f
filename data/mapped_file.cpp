#include "data/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/check.h"

namespace lolcats {

MappedFile::MappedFile(const std::string& path) {
  const char* p = path.c_str();
  const int fd = open(p, O_RDONLY);
  ENSURE(fd >= 0, "cannot open %s: %s", p, std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    fail(__FILE__, __LINE__, strfmt("%s is not a regular file", p));
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) map_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (map_ == MAP_FAILED) map_ = nullptr;
  ENSURE(size_ == 0 || map_, "cannot map %s: %s", p, std::strerror(err));
}

MappedFile::~MappedFile() {
  if (map_) munmap(map_, size_);
}

}  // namespace lolcats
