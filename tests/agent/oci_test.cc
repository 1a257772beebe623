// The oci driver's pure parts: CDI specs read as nvidia-ctk writes them (YAML, or JSON), bad
// specs refused naming the field, devices resolved by name with their spec's common edits once,
// and the config.json a task gets: exactly the given devices (their numbers from the host's
// nodes), everything else denied, its limits, its mounts, and its hooks.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/oci.h"

namespace gp {
namespace {

constexpr const char* kSpec = R"(cdiVersion: "0.6.0"
kind: nvidia.com/gpu
containerEdits:
  env: [NVIDIA_CTK=1]
  mounts:
    - hostPath: /usr/lib/libcuda.so.1
      containerPath: /usr/lib/libcuda.so.1
      options: [ro, nosuid, nodev, bind]
  hooks:
    - hookName: createContainer
      path: /usr/bin/nvidia-ctk
      args: [nvidia-ctk, hook, update-ldcache]
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/nvidia0
          hostPath: /dev/null
  - name: GPU-1111
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1}
      env: [ONE=1]
)";

TEST(CdiTest, ParsesWhatNvidiaCtkWrites) {
  auto spec = ParseCdiSpec(kSpec, "nvidia.yaml");
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_EQ(spec->kind, "nvidia.com/gpu");
  ASSERT_EQ(spec->devices.size(), 2u);
  EXPECT_EQ(spec->devices[1].first, "GPU-1111");
  EXPECT_EQ(spec->devices[1].second.device_nodes[0].major, 195);
  EXPECT_EQ(spec->common.hooks[0].hook_name, "createContainer");
  EXPECT_EQ(spec->common.mounts[0].options.size(), 4u);
  // JSON is YAML too.
  auto json = ParseCdiSpec(R"({"cdiVersion": "0.5.0", "kind": "example.com/gpu", "devices": [{"name": "a", "containerEdits": {"env": ["A=1"]}}]})",
                           "x.json");
  ASSERT_TRUE(json) << json.error().message();
  EXPECT_EQ(json->devices[0].second.env[0], "A=1");
}

TEST(CdiTest, BadSpecsNameTheFileAndField) {
  struct Case {
    const char* text;
    const char* says;
  };
  const Case cases[] = {
      {"kind: nvidia.com/gpu\ndevices: []\n", "cdiVersion"},
      {"cdiVersion: 0.6.0\nkind: gpu\ndevices: []\n", "kind"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\n", "devices"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\ndevices: [{containerEdits: {}}]\n", "devices[0].name"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {deviceNodes: [{path: dev/x}]}}]\n",
       "devices[0].containerEdits.deviceNodes[0].path"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/x, major: many}]}}]\n",
       "major"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {hooks: [{hookName: later, path: /x}]}}]\n",
       "hookName"},
      {"cdiVersion: 0.6.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {mounts: [{hostPath: /a}]}}]\n", "containerPath"},
      {"cdiVersion: [0.6.0\n", "line"},
  };
  for (const Case& c : cases) {
    auto spec = ParseCdiSpec(c.text, "bad.yaml");
    ASSERT_FALSE(spec) << c.text;
    EXPECT_NE(spec.error().message().find("bad.yaml"), std::string::npos) << spec.error().message();
    EXPECT_NE(spec.error().message().find(c.says), std::string::npos) << spec.error().message();
  }
}

class CdiRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("cdi-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "nvidia.yaml") << kSpec;
    std::ofstream(dir_ / "notes.txt") << "not a spec";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(CdiRegistryTest, ResolvesTheGivenDevicesWithTheirSpecsCommonEditsOnce) {
  auto reg = CdiRegistry::Load({dir_, dir_ / "missing"});
  ASSERT_TRUE(reg) << reg.error().message();
  EXPECT_EQ(reg->size(), 1u) << "only *.yaml, *.yml and *.json are specs; a missing directory is skipped";
  EXPECT_TRUE(reg->has("nvidia.com/gpu"));
  EXPECT_FALSE(reg->has("amd.com/gpu"));
  auto one = reg->Resolve("nvidia.com/gpu", {"0"});
  ASSERT_TRUE(one);
  ASSERT_EQ(one->device_nodes.size(), 1u);
  EXPECT_EQ(one->device_nodes[0].path, "/dev/nvidia0");
  EXPECT_EQ(one->mounts.size(), 1u);
  auto both = reg->Resolve("nvidia.com/gpu", {"0", "GPU-1111"});
  ASSERT_TRUE(both);
  EXPECT_EQ(both->device_nodes.size(), 2u);
  EXPECT_EQ(both->mounts.size(), 1u) << "the spec's common edits once, however many of its devices";
  EXPECT_EQ(both->hooks.size(), 1u);
  EXPECT_EQ(both->env, (std::vector<std::string>{"ONE=1", "NVIDIA_CTK=1"}));
  auto unknown = reg->Resolve("nvidia.com/gpu", {"7"});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("nvidia.com/gpu=7"), std::string::npos);

  std::ofstream(dir_ / "broken.json") << "{";
  auto broken = CdiRegistry::Load({dir_});
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message().find("broken.json"), std::string::npos);
}

TEST(OciConfigTest, GivesExactlyTheGivenDevicesAndTheLimits) {
  struct stat null_st {};
  ASSERT_EQ(stat("/dev/null", &null_st), 0);
  CdiEdits edits;
  edits.device_nodes.push_back(CdiDeviceNode{.path = "/dev/nvidia0", .host_path = "/dev/null"});
  edits.device_nodes.push_back(CdiDeviceNode{.path = "/dev/nvidia1", .type = "c", .major = 195, .minor = 1, .permissions = "rw"});
  edits.env = {"CDI=1"};
  edits.hooks.push_back(CdiHook{.hook_name = "createContainer", .path = "/usr/bin/hook", .args = {"hook", "x"}});
  OciTask t{.args = {"sh", "-c", "true"}, .env = {"PATH=/bin"}, .cwd = "/task", .uid = 1, .gid = 1, .rootfs = "/srv/root",
            .read_only_root = true, .hostname = "n1", .memory_bytes = 32 << 20, .cpu_millicores = 1500, .pids_limit = 64,
            .memory_swap_limit = true, .binds = {{"/var/lib/gpupool/job/work", "/task"}}, .cgroups_path = "/gpupool/a/j1"};
  auto text = OciConfig(t, edits);
  ASSERT_TRUE(text) << text.error().message();
  const auto c = nlohmann::json::parse(*text);
  EXPECT_EQ(c["process"]["user"]["uid"], 1);
  EXPECT_EQ(c["process"]["capabilities"]["bounding"].size(), 0u) << "no capabilities";
  EXPECT_TRUE(c["process"]["noNewPrivileges"].get<bool>());
  EXPECT_EQ(c["process"]["env"], nlohmann::json({"PATH=/bin", "CDI=1"}));
  EXPECT_TRUE(c["root"]["readonly"].get<bool>());
  const auto& r = c["linux"]["resources"];
  EXPECT_EQ(r["memory"]["limit"], 32 << 20);
  EXPECT_EQ(r["memory"]["swap"], 32 << 20);
  EXPECT_EQ(r["pids"]["limit"], 64);
  EXPECT_EQ(r["cpu"]["quota"], 150000);
  EXPECT_EQ(r["cpu"]["period"], 100000);
  ASSERT_EQ(r["devices"].size(), 3u);
  EXPECT_FALSE(r["devices"][0]["allow"].get<bool>()) << "everything denied first";
  EXPECT_EQ(r["devices"][1]["major"], major(null_st.st_rdev)) << "a node without numbers takes the host's";
  EXPECT_EQ(r["devices"][1]["minor"], minor(null_st.st_rdev));
  EXPECT_EQ(r["devices"][2]["major"], 195);
  EXPECT_EQ(r["devices"][2]["access"], "rw");
  ASSERT_EQ(c["linux"]["devices"].size(), 2u);
  EXPECT_EQ(c["linux"]["devices"][0]["path"], "/dev/nvidia0");
  EXPECT_EQ(c["linux"]["cgroupsPath"], "/gpupool/a/j1");
  bool net = false;
  for (const auto& ns : c["linux"]["namespaces"]) net = net || ns["type"] == "network";
  EXPECT_FALSE(net) << "the host's network: MASTER_ADDR works as for processes";
  bool task = false;
  for (const auto& m : c["mounts"]) task = task || (m["destination"] == "/task" && m["source"] == "/var/lib/gpupool/job/work");
  EXPECT_TRUE(task);
  EXPECT_EQ(c["hooks"]["createContainer"][0]["path"], "/usr/bin/hook");

  // No limits asked: none written; a device node the host lacks is an error naming it.
  OciTask plain{.args = {"true"}, .cwd = "/task", .rootfs = "/srv/root"};
  auto bare = nlohmann::json::parse(*OciConfig(plain, {}));
  EXPECT_FALSE(bare["linux"]["resources"].contains("memory"));
  EXPECT_FALSE(bare["linux"]["resources"].contains("pids"));
  EXPECT_FALSE(bare.contains("hooks"));
  CdiEdits missing;
  missing.device_nodes.push_back(CdiDeviceNode{.path = "/dev/nvidia9", .host_path = "/dev/no-such-node"});
  auto refused = OciConfig(plain, missing);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("/dev/no-such-node"), std::string::npos);
}

}  // namespace
}  // namespace gp
