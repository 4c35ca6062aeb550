#include "controllers/manager.h"

#include <gtest/gtest.h>

namespace trellis::controllers {
namespace {

using Names = std::vector<std::string>;

TEST(SelectControllers, StarIsTheProfilesDefaults) {
  auto local = selectControllers("*", Profile::kLocal);
  ASSERT_TRUE(local);
  EXPECT_EQ(local->size(), allControllers().size());
  EXPECT_EQ(*selectControllers("*", Profile::kCluster), (Names{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "csi-capacity"}));
}

TEST(SelectControllers, NamesAddAndMinusRemoves) {
  auto sel = selectControllers("*,-csi-provisioner", Profile::kLocal);
  ASSERT_TRUE(sel);
  EXPECT_EQ(std::count(sel->begin(), sel->end(), "csi-provisioner"), 0);
  EXPECT_EQ(sel->size(), allControllers().size() - 1);
  // Without '*' only what is named runs; a named one runs even if not a default.
  EXPECT_EQ(*selectControllers("scheduler, nodeipam", Profile::kLocal), (Names{"nodeipam", "scheduler"}));
  EXPECT_EQ(*selectControllers("*,scheduler", Profile::kCluster), (Names{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "csi-capacity", "scheduler"}));
  EXPECT_EQ(*selectControllers("scheduler,-scheduler", Profile::kLocal), Names{});
  EXPECT_EQ(*selectControllers("", Profile::kLocal), Names{});
}

TEST(SelectControllers, UnknownNamesAreErrors) {
  auto sel = selectControllers("*,bogus,-nope", Profile::kLocal);
  ASSERT_FALSE(sel);
  EXPECT_EQ(sel.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(sel.error().message().find("bogus, -nope"), std::string::npos) << sel.error().message();
}

}  // namespace
}  // namespace trellis::controllers
