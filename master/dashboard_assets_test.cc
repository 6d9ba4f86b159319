// The embedded dashboard files are byte for byte the ones in
// master/dashboard/, each under its URL path with the type its extension
// names, and nothing else is embedded.
#include "master/dashboard_assets.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace taskq {
namespace {

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(DashboardAssets, EveryFileIsEmbeddedByteForByte) {
  const std::filesystem::path dir = std::filesystem::path(TASKQ_SOURCE_DIR) / "master/dashboard";
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const std::string ext = entry.path().extension().string();
    if (ext != ".html" && ext != ".css" && ext != ".js") continue;
    ++files;
    const DashboardAsset* asset = FindDashboardAsset(name == "index.html" ? "/" : "/" + name);
    ASSERT_NE(asset, nullptr) << name;
    EXPECT_EQ(asset->body, Slurp(entry.path())) << name;
    const std::string want = ext == ".html" ? "text/html; charset=utf-8"
                             : ext == ".css" ? "text/css; charset=utf-8"
                                             : "text/javascript; charset=utf-8";
    EXPECT_EQ(asset->content_type, want) << name;
  }
  EXPECT_EQ(files, 3u);
  EXPECT_EQ(DashboardAssets().size(), files);
  EXPECT_EQ(FindDashboardAsset("/index.html"), nullptr);
  EXPECT_EQ(FindDashboardAsset("/embed.cmake"), nullptr);
}

}  // namespace
}  // namespace taskq
