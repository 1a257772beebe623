#include "sched/snapshot.h"

#include <fmt/format.h>

#include <bit>

namespace gp {

int NodeState::WholeFreeGpus() const { return std::popcount(WholeFreeMask()); }

uint16_t NodeState::WholeFreeMask() const {
  uint16_t m = 0;
  for (int i = 0; i < gpu_count; ++i) {
    if (gpu_free[i] == kWholeGpu.value() && !(quarantined >> i & 1)) m = static_cast<uint16_t>(m | (1u << i));
  }
  return m;
}

int16_t NodeState::LargestPartialFree() const {
  int16_t best = 0;
  for (int i = 0; i < gpu_count; ++i) {
    if (gpu_free[i] < kWholeGpu.value() && gpu_free[i] > best && !(quarantined >> i & 1)) best = gpu_free[i];
  }
  return best;
}

NodeState MakeNodeState(const Fleet& fleet, const Node& n) {
  {
    NodeState s;
    s.id = n.id;
    s.gpu_count = static_cast<uint8_t>(n.gpus.size());
    if (auto m = n.gpu_model()) s.model_bit = m->value();
    s.gpu_memory = n.gpus.empty() ? MiB{0} : n.gpus.front().memory;
    s.site = n.site;
    s.price = fleet.PricePerGpuHour(n);
    s.nic = n.nic;
    for (int i = 0; i < s.gpu_count; ++i) s.gpu_free[i] = static_cast<int16_t>(kWholeGpu.value());
    s.cpu_total = s.cpu_free = n.cpu;
    s.memory_total = s.memory_free = n.memory;
    if (n.measured) s.load = *n.measured;
    return s;
  }
}

namespace {

// Projected utilisation the allocation adds, in per-mille of the node (integer arithmetic, so
// Release subtracts exactly what Allocate added).
Utilisation LoadOf(const NodeState& n, const TaskAllocation& a) {
  Utilisation u;
  if (n.gpu_count > 0) {
    u.gpu = PerMille{std::popcount(a.gpu_mask) * a.share.value() / n.gpu_count};
  }
  if (n.cpu_total.value() > 0) u.cpu = PerMille{a.cpu.value() * 1000 / n.cpu_total.value()};
  if (n.memory_total.value() > 0) {
    u.memory = PerMille{a.memory.value() * 1000 / n.memory_total.value()};
  }
  return u;
}

}  // namespace

Status Allocate(NodeState& n, const TaskAllocation& a) {
  auto no = [&](std::string what) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("node {}: {}", n.id.value(), what));
  };
  if (a.share.value() <= 0 || a.share > kWholeGpu) return no("GPU share out of range");
  if ((a.gpu_mask >> n.gpu_count) != 0) return no("GPU index beyond the node's GPUs");
  if (a.gpu_mask & n.quarantined) return no("a GPU asked for is quarantined");
  for (int i = 0; i < n.gpu_count; ++i) {
    if ((a.gpu_mask >> i & 1) && n.gpu_free[i] < a.share.value()) {
      return no(fmt::format("GPU {} has {} of 1000 free, asked {}", i, n.gpu_free[i], a.share.value()));
    }
  }
  if (a.cpu > n.cpu_free) return no(fmt::format("CPU asked {}m, free {}m", a.cpu.value(), n.cpu_free.value()));
  if (a.memory > n.memory_free) {
    return no(fmt::format("memory asked {} MiB, free {} MiB", a.memory.value(), n.memory_free.value()));
  }
  if (n.task_slots > 0 && n.tasks >= n.task_slots) return no(fmt::format("runs {} tasks, its most", n.tasks));
  for (int i = 0; i < n.gpu_count; ++i) {
    if (a.gpu_mask >> i & 1) n.gpu_free[i] = static_cast<int16_t>(n.gpu_free[i] - a.share.value());
  }
  ++n.tasks;
  n.cpu_free -= a.cpu;
  n.memory_free -= a.memory;
  const Utilisation add = LoadOf(n, a);
  n.load.gpu += add.gpu;
  n.load.cpu += add.cpu;
  n.load.memory += add.memory;
  return Status::Ok();
}

Status Release(NodeState& n, const TaskAllocation& a) {
  auto no = [&](std::string what) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("node {}: release: {}", n.id.value(), what));
  };
  if ((a.gpu_mask >> n.gpu_count) != 0) return no("GPU index beyond the node's GPUs");
  for (int i = 0; i < n.gpu_count; ++i) {
    if ((a.gpu_mask >> i & 1) && n.gpu_free[i] + a.share.value() > kWholeGpu.value()) {
      return no(fmt::format("GPU {} would be more than free", i));
    }
  }
  if (n.cpu_free + a.cpu > n.cpu_total) return no("CPU would exceed the node's total");
  if (n.memory_free + a.memory > n.memory_total) return no("memory would exceed the node's total");
  for (int i = 0; i < n.gpu_count; ++i) {
    if (a.gpu_mask >> i & 1) n.gpu_free[i] = static_cast<int16_t>(n.gpu_free[i] + a.share.value());
  }
  n.cpu_free += a.cpu;
  n.memory_free += a.memory;
  if (n.tasks > 0) --n.tasks;
  const Utilisation sub = LoadOf(n, a);
  n.load.gpu -= sub.gpu;
  n.load.cpu -= sub.cpu;
  n.load.memory -= sub.memory;
  return Status::Ok();
}

}  // namespace gp
