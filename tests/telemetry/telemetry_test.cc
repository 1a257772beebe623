#include <gtest/gtest.h>

#include "adapters/local_fleet.h"
#include "adapters/nvml.h"
#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {
namespace {

TEST(ProcParsersTest, StatMeminfoNetDev) {
  // user nice system idle iowait irq softirq steal: busy = total - idle - iowait.
  auto a = ParseProcStat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n");
  auto b = ParseProcStat("cpu  400 0 150 1100 50 0 0 0 0 0\n");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->total, 1000u);
  EXPECT_EQ(a->busy, 150u);
  // Between them: 400 more busy of 700 more total -> 571 per mille.
  EXPECT_EQ(CpuBusyBetween(*a, *b).value(), 571);
  EXPECT_EQ(CpuBusyBetween(*b, *a).value(), 0) << "a counter going backwards reads as idle";
  EXPECT_FALSE(ParseProcStat("intr 1 2 3\n"));

  auto m = ParseMeminfo("MemTotal:       24683468 kB\nMemFree:  100 kB\nMemAvailable:   24290000 kB\n");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->total.value(), 24683468 / 1024);
  EXPECT_EQ(m->available.value(), 24290000 / 1024);
  EXPECT_FALSE(ParseMeminfo("MemTotal: 1 kB\n"));

  const char* netdev =
      "Inter-|   Receive                                                |  Transmit\n"
      " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
      "    lo: 5000 10 0 0 0 0 0 0 5000 10 0 0 0 0 0 0\n"
      "  eth0: 1000 5 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n"
      "  eth1: 24 1 0 0 0 0 0 0 76 1 0 0 0 0 0 0\n";
  auto n = ParseNetDev(netdev);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->rx.value(), 1024) << "loopback left out";
  EXPECT_EQ(n->tx.value(), 376);
  EXPECT_FALSE(ParseNetDev("  eth0: 1 2 3\n"));
}

TEST(SimulatedGpuSourceTest, LoadFollowsSetBusy) {
  auto s = SimulatedGpuSource::Parse("4xH100", "n1");
  ASSERT_TRUE(s);
  auto devices = s->Devices();
  ASSERT_EQ(devices->size(), 4u);
  EXPECT_EQ((*devices)[2].uuid, "GPU-sim-n1-02");
  EXPECT_EQ((*devices)[2].memory.value(), 80 * 1024);
  EXPECT_EQ((*devices)[2].nvlink_peers, 0b1011);
  ASSERT_TRUE(s->SetBusy(1, PerMille{1000}, MiB{20'000}).ok());
  auto load = s->Sample();
  EXPECT_EQ((*load)[1].utilisation.value(), 1000);
  EXPECT_EQ((*load)[1].memory_used.value(), 20'000);
  EXPECT_EQ((*load)[0].utilisation.value(), 0);
  EXPECT_GT(*(*load)[1].temperature_c, *(*load)[0].temperature_c);
  EXPECT_FALSE(s->SetBusy(4, PerMille{1}, MiB{0}).ok());
  for (const char* bad : {"8", "0xH100", "17xH100", "x", "4x"}) {
    EXPECT_FALSE(SimulatedGpuSource::Parse(bad)) << bad;
  }
}

// What the server keeps of a GPU's sample: every field as it came within its range (absent
// stays absent), past it clamped, and the XIDs left out; 32 bytes a GPU.
TEST(KeptGpuSampleTest, KeepsEachFieldAndClampsPastItsRange) {
  static_assert(sizeof(KeptGpuSample) <= 32);
  struct Case {
    const char* what;
    GpuSample in;
    GpuSample out;
  };
  const GpuSample h200{.index = 7, .utilisation = PerMille{950}, .memory_utilisation = PerMille{412},
                       .memory_used = MiB{70'000}, .memory_total = MiB{143'771}, .temperature_c = -5,
                       .power_mw = 699'500, .ecc_uncorrected = 0, .xids = {79, 48}};
  GpuSample h200_out = h200;
  h200_out.xids.clear();
  const std::vector<Case> cases = {
      {"nothing optional", GpuSample{.index = 2, .utilisation = PerMille{1000}}, GpuSample{.index = 2, .utilisation = PerMille{1000}}},
      {"everything, XIDs left out", h200, h200_out},
      {"past every range",
       GpuSample{.index = 300, .utilisation = PerMille{70'000}, .memory_utilisation = PerMille{-4}, .memory_used = MiB{int64_t{1} << 40},
                 .memory_total = MiB{-1}, .temperature_c = 100'000, .power_mw = int64_t{1} << 40, .ecc_uncorrected = -9},
       GpuSample{.index = 255, .utilisation = PerMille{65'535}, .memory_utilisation = PerMille{0}, .memory_used = MiB{UINT32_MAX},
                 .memory_total = MiB{0}, .temperature_c = 32'767, .power_mw = int64_t{UINT32_MAX} - 1, .ecc_uncorrected = 0}},
  };
  for (const Case& c : cases) {
    const GpuSample got = KeptGpuSample(c.in).sample();
    EXPECT_EQ(got.index, c.out.index) << c.what;
    EXPECT_EQ(got.utilisation, c.out.utilisation) << c.what;
    EXPECT_EQ(got.memory_utilisation, c.out.memory_utilisation) << c.what;
    EXPECT_EQ(got.memory_used, c.out.memory_used) << c.what;
    EXPECT_EQ(got.memory_total, c.out.memory_total) << c.what;
    EXPECT_EQ(got.temperature_c, c.out.temperature_c) << c.what;
    EXPECT_EQ(got.power_mw, c.out.power_mw) << c.what;
    EXPECT_EQ(got.ecc_uncorrected, c.out.ecc_uncorrected) << c.what;
    EXPECT_EQ(got.xids, c.out.xids) << c.what;
    EXPECT_EQ(KeptGpuSample(c.in).index(), c.out.index) << c.what;
    EXPECT_EQ(KeptGpuSample(c.in).utilisation(), c.out.utilisation) << c.what;
  }
}

TEST(ModelFromDeviceNameTest, Table) {
  const std::pair<const char*, const char*> cases[] = {
      {"NVIDIA H200", "H200"},
      {"NVIDIA H100 80GB HBM3", "H100"},
      {"NVIDIA A100-SXM4-80GB", "A100"},
      {"NVIDIA A100-SXM4-40GB", "A100-40GB"},
      {"Tesla V100-SXM2-32GB", "V100"},
      {"NVIDIA L4", "L4"},
      {"Simulated H100", "H100"},
  };
  for (const auto& [name, want] : cases) EXPECT_EQ(ModelFromDeviceName(name), want) << name;
}

TEST(LocalFleetTest, FromInventory) {
  auto sim = SimulatedGpuSource::Parse("2xL4", "box");
  ASSERT_TRUE(sim);
  ASSERT_TRUE(sim->SetBusy(0, PerMille{600}, MiB{0}).ok());
  HostSample h{.cpu_cores = 16, .cpu_busy = PerMille{250},
               .memory = {.total = MiB{65'536}, .available = MiB{49'152}}};
  std::vector<GpuDevice> devices = *sim->Devices();
  for (GpuDevice& d : devices) d.name = "NVIDIA L4";
  auto f = FleetFromInventory("box", devices, *sim->Sample(), h);
  ASSERT_TRUE(f) << f.error().message();
  ASSERT_EQ(f->nodes.size(), 1u);
  const Node& n = f->nodes[0];
  EXPECT_EQ(n.name, "box");
  EXPECT_EQ(f->model(*n.gpu_model()).name, "L4");
  EXPECT_EQ(n.gpus[1].uuid, "GPU-sim-box-01");
  EXPECT_EQ(n.cpu.value(), 16'000);
  // Measured load for least-loaded: CPU 25%, GPU mean (60% + 0%) / 2 = 30%, memory 16/64 = 25%.
  EXPECT_EQ(n.measured->cpu.value(), 250);
  EXPECT_EQ(n.measured->gpu.value(), 300);
  EXPECT_EQ(n.measured->memory.value(), 250);
}

TEST(NvmlTest, MissingLibrarySaysWhatToDo) {
  auto nvml = OpenNvml("libnvidia-ml-does-not-exist.so.1");
  ASSERT_FALSE(nvml);
  EXPECT_NE(nvml.error().message().find("cannot load libnvidia-ml-does-not-exist.so.1"), std::string::npos);
  EXPECT_NE(nvml.error().message().find("simulated GPUs"), std::string::npos);
  // A library that is not NVML at all: loads, but lacks NVML's functions.
  auto wrong = OpenNvml("libm.so.6");
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("lacks a required function"), std::string::npos);
}

}  // namespace
}  // namespace gp
