#include "master/dashboard_assets.h"

namespace taskq {

const DashboardAsset* FindDashboardAsset(std::string_view path) {
  for (const DashboardAsset& a : DashboardAssets()) {
    if (a.path == path) return &a;
  }
  return nullptr;
}

}  // namespace taskq
