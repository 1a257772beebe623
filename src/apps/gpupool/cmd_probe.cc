// `gpupool probe`: what an agent on this machine would report: its GPUs (NVML or simulated),
// CPU, memory and network, sampled a few times. The first check to run on a new GPU node.
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "adapters/cuda_check.h"
#include "adapters/nvml.h"
#include "adapters/procfs.h"
#include "apps/gpupool/commands.h"
#include "core/units.h"

namespace gp::app {
namespace {

struct ProbeArgs {
  std::string gpus = "auto";
  int samples = 3;
  std::string interval = "500ms";
  bool json = false;
};

int RunProbe(const ProbeArgs& a) {
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool probe: {}\n", m);
    return 1;
  };
  auto interval = ParseDuration(a.interval);
  if (!interval) return fail("--interval: " + interval.error().message());
  std::unique_ptr<GpuSource> gpus;
  std::string gpu_note;
  if (a.gpus == "auto" || a.gpus == "nvml") {
    auto nvml = OpenNvml();
    if (nvml) {
      gpus = std::move(*nvml);
    } else if (a.gpus == "nvml") {
      return fail(nvml.error().message());
    } else {
      gpu_note = nvml.error().message();
    }
  } else {
    auto sim = SimulatedGpuSource::Parse(a.gpus);
    if (!sim) return fail("--gpus: " + sim.error().message());
    gpus = std::make_unique<SimulatedGpuSource>(std::move(*sim));
  }
  std::vector<GpuDevice> devices;
  if (gpus) {
    auto d = gpus->Devices();
    if (!d) return fail(d.error().message());
    devices = *d;
  }
  ProcfsHost host;
  nlohmann::ordered_json out;
  out["gpu_source"] = gpus ? std::string(gpus->kind()) : "none";
  if (gpus) {
    (void)gpus->Sample();  // the first sample sets up event watching where there is any
    out["xid_events"] = std::string(gpus->xid_events());
  }
  if (!gpu_note.empty()) out["gpu_note"] = gpu_note;
  for (const GpuDevice& d : devices) {
    out["devices"].push_back({{"index", d.index}, {"uuid", d.uuid}, {"name", d.name}, {"model", ModelFromDeviceName(d.name)},
                              {"memory_mib", d.memory.value()}, {"compute_capability", d.compute_capability},
                              {"nvlink_peers", d.nvlink_peers}});
  }
  if (!a.json) {
    fmt::print("GPUs ({}; XID events {}):\n", out["gpu_source"].get<std::string>(),
               gpus ? std::string(gpus->xid_events()) : "-");
    if (!gpu_note.empty()) fmt::print("  none: {}\n", gpu_note);
    for (const GpuDevice& d : devices) {
      fmt::print("  {}  {:<22} {}  {} MiB  cc {}.{}  nvlink peers 0x{:x}\n", d.index, d.name, d.uuid, d.memory.value(),
                 d.compute_capability / 10, d.compute_capability % 10, d.nvlink_peers);
    }
  }
  for (int i = 0; i < a.samples; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(interval->value()));
    auto h = host.Sample();
    if (!h) return fail(h.error().message());
    nlohmann::ordered_json s{{"cpu_cores", h->cpu_cores}, {"cpu_busy", static_cast<double>(h->cpu_busy.value()) / 1000},
                             {"memory_total_mib", h->memory.total.value()}, {"memory_available_mib", h->memory.available.value()},
                             {"net_rx_bytes", h->net.rx.value()}, {"net_tx_bytes", h->net.tx.value()}};
    if (!a.json) {
      fmt::print("sample {}: {} cores, CPU {:.1f}% busy, memory {} of {} MiB available, net rx {} tx {}\n", i + 1,
                 h->cpu_cores, static_cast<double>(h->cpu_busy.value()) / 10, h->memory.available.value(),
                 h->memory.total.value(), FormatBytes(h->net.rx), FormatBytes(h->net.tx));
    }
    if (gpus) {
      auto g = gpus->Sample();
      if (!g) return fail(g.error().message());
      for (const GpuSample& x : *g) {
        nlohmann::ordered_json j{{"index", x.index}, {"utilisation", static_cast<double>(x.utilisation.value()) / 1000},
                                 {"memory_utilisation", static_cast<double>(x.memory_utilisation.value()) / 1000},
                                 {"memory_used_mib", x.memory_used.value()}, {"memory_total_mib", x.memory_total.value()}};
        if (x.temperature_c) j["temperature_c"] = *x.temperature_c;
        if (x.power_mw) j["power_w"] = static_cast<double>(*x.power_mw) / 1000;
        if (x.ecc_uncorrected) j["ecc_uncorrected"] = *x.ecc_uncorrected;
        if (!x.xids.empty()) j["xids"] = x.xids;
        s["gpus"].push_back(j);
        if (!a.json) {
          fmt::print("  gpu {}: {:.0f}% busy, memory {} / {} MiB, {} C, {:.1f} W, ECC uncorrected {}\n", x.index,
                     static_cast<double>(x.utilisation.value()) / 10, x.memory_used.value(), x.memory_total.value(),
                     x.temperature_c ? std::to_string(*x.temperature_c) : "?",
                     x.power_mw ? static_cast<double>(*x.power_mw) / 1000 : 0.0,
                     x.ecc_uncorrected ? std::to_string(*x.ecc_uncorrected) : "n/a");
        }
      }
    }
    out["samples"].push_back(s);
  }
  if (a.json) fmt::print("{}\n", out.dump(2));
  return 0;
}

}  // namespace

void AddProbeCommand(CLI::App& app, int* exit_code) {
  auto check = std::make_shared<CudaCheckOptions>();
  CLI::App* st = app.add_subcommand("gpu-selftest",
                                    "Check one GPU of this machine through CUDA: memory written and read back, a kernel's results "
                                    "(what an agent runs on a quarantined GPU)");
  st->add_option("--uuid", check->uuid, "the GPU's UUID, as NVML and `probe` show it");
  st->add_option("--index", check->ordinal, "CUDA device ordinal, when no --uuid");
  st->add_option("--megabytes", check->megabytes, "device memory to check")->check(CLI::Range(2, 1 << 20));
  st->callback([check, exit_code] {
    auto r = CudaCheck(*check);
    if (!r) {
      fmt::print("gpu-selftest: FAILED: {}\n", r.error().message());
      *exit_code = 1;
      return;
    }
    fmt::print("gpu-selftest: passed: {}\n", *r);
    *exit_code = 0;
  });

  auto args = std::make_shared<ProbeArgs>();
  CLI::App* cmd = app.add_subcommand("probe", "Show this machine's GPUs, CPU, memory and network as an agent sees them");
  cmd->add_option("--gpus", args->gpus, "auto (NVML if present), nvml (required), or simulated COUNTxMODEL such as 8xH100");
  cmd->add_option("--samples", args->samples, "how many samples")->check(CLI::Range(1, 10'000));
  cmd->add_option("--interval", args->interval, "time between samples, e.g. 500ms, 2s");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args, exit_code] { *exit_code = RunProbe(*args); });
}

}  // namespace gp::app
