// The dashboard's static files (master/dashboard/), embedded in the binary
// at build time (master/dashboard/embed_files.cmake generates the table in dashboard_files.cc):
// the page works offline and a master serves the page that matches its API.
//
// Thread-safety: the table is built once (a function-local static) and
// never changes.
#pragma once

#include <string_view>
#include <vector>

namespace taskq {

struct DashboardAsset {
  std::string_view path;          // URL path: "/" (index.html), "/dashboard.js", ...
  std::string_view content_type;  // from the file's extension
  std::string_view body;
};

// Every embedded file, sorted by file name.
const std::vector<DashboardAsset>& DashboardAssets();

// The file served at `path`, or null.
const DashboardAsset* FindDashboardAsset(std::string_view path);

}  // namespace taskq
