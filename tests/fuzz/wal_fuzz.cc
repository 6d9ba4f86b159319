// Fuzz target: the master's reading of SQLite's write-ahead log before it
// opens the store (master/wal_check.h), which decides between "torn tail"
// and "damage, refuse to start". An input is [2-byte page size hint] and
// the bytes of a WAL file. Any file must give a report or an error status,
// never a crash, a hang or an out-of-bounds read.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "master/wal_check.h"
#include "tests/fuzz/fuzz_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    std::string tmpl = "/tmp/taskq-wal-fuzz-XXXXXX";
    int fd = mkstemp(tmpl.data());
    if (fd >= 0) close(fd);
    return tmpl;
  }();
  taskq::fuzz::FuzzReader in(data, size);
  const uint32_t page_size_hint = in.U16() * 2u;
  const std::string wal = in.Bytes(size);
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  fwrite(wal.data(), 1, wal.size(), f);
  fclose(f);
  auto report = taskq::InspectWal(path, page_size_hint);
  if (report.ok()) (void)report->TornTail();
  return 0;
}
