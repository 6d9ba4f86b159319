#include "common/port_file.h"

#include <cstdio>
#include <fstream>

namespace taskq {

bool WritePortFile(const std::string& path, absl::string_view address) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return false;
    out << address << "\n";
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace taskq
