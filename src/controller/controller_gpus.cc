// GPU health: XID errors classified (health/gpu_health.h), rising uncorrected ECC counts,
// quarantine of one GPU and its jobs moved elsewhere, probation and the agent's self-test that
// returns a GPU to service.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "controller/controller.h"
#include "health/gpu_health.h"

namespace gp {

const std::string& GpuTexts::operator[](size_t gpu) const {
  static const std::string kNone;
  for (const auto& [g, text] : texts_) {
    if (g == gpu) return text;
  }
  return kNone;
}

void GpuTexts::set(size_t gpu, std::string text) {
  std::erase_if(texts_, [&](const auto& e) { return e.first == gpu; });
  if (!text.empty()) texts_.emplace_back(gpu, std::move(text));
}

NodeRecord Controller::Shown(const NodeSlot& slot) const {
  NodeRecord r = slot.record;
  r.spec.gpus = GpusOf(slot);
  for (size_t g = 0; g < r.spec.gpus.size() && g < kMaxGpusPerNode; ++g) {
    r.gpu_health.push_back(slot.quarantine[g].empty() ? "ok" : "quarantined: " + slot.quarantine[g]);
    r.gpu_check.push_back(slot.last_check[g]);
  }
  return r;
}

Status Controller::PersistNode(const NodeSlot& slot) {
  return WriteWithEvents(
      [&](const Events& e) { return journal_.PutNode(slot.record.spec.name, NodeToJson(Shown(slot), fleet_, "ready", 0), e); });
}

void Controller::Quarantine(NodeSlot& slot, int gpu, const std::string& why) {
  slot.gpu_facts().last_fault_ms[static_cast<size_t>(gpu)] = clock_.Now().value();
  if (!slot.quarantine[static_cast<size_t>(gpu)].empty()) {  // at fault again while out: probation restarts
    slot.quarantine.set(static_cast<size_t>(gpu), why);
    return;
  }
  slot.quarantine.set(static_cast<size_t>(gpu), why);
  Emit("gpu.quarantined", fmt::format("node/{}/gpu/{}", slot.record.spec.name, gpu),
       nlohmann::json{{"node", slot.record.spec.name}, {"gpu", gpu}, {"reason", why}}.dump());
  cluster_.sched().Update(slot.record.spec.id,
                          [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined | (1u << gpu)); });
  cluster_.FailJobsOn(slot.record.spec.id, gpu, fmt::format("GPU {} on {} quarantined: {}", gpu, slot.record.spec.name, why),
                      Millis{0}, true, -1, clock_.Now());
  StoreFailed(StoreChanged());
  StoreFailed(PersistNode(slot));
}

Result<std::string> Controller::GpuXid(const std::string& name, int gpu, int xid) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Error(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(GpusOf(*slot).size())) {
    return InvalidArgument(fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  slot->gpu_facts().last_xid[static_cast<size_t>(gpu)] = xid;
  const XidClass c = ClassifyXid(xid);
  const std::string what = fmt::format("XID {} ({})", xid, c.meaning);
  switch (c.action) {
    case GpuFaultAction::kQuarantine: Quarantine(*slot, gpu, what); return "quarantined: " + what;
    case GpuFaultAction::kJobsFault: return "recorded, the GPU stays in service: " + what;
    case GpuFaultAction::kNone: return "recorded: " + what;
  }
  return what;
}

Status Controller::UndrainGpu(const std::string& name, int gpu) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(GpusOf(*slot).size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  if (!slot->quarantine[static_cast<size_t>(gpu)].empty()) {
    Emit("gpu.returned", fmt::format("node/{}/gpu/{}", name, gpu), nlohmann::json{{"node", name}, {"gpu", gpu}}.dump());
  }
  slot->quarantine.set(static_cast<size_t>(gpu), "");
  slot->gpu_facts().check_asked_ms[static_cast<size_t>(gpu)] = 0;
  cluster_.sched().Update(slot->record.spec.id,
                          [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined & ~(1u << gpu)); });
  return PersistNode(*slot);
}

Status Controller::CheckGpu(const std::string& name, int gpu) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(GpusOf(*slot).size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  if (slot->quarantine[static_cast<size_t>(gpu)].empty()) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("GPU {} of {} is in service; only a quarantined GPU is self-tested (no job may share it)", gpu, name));
  }
  AskSelfTest(*slot, gpu);
  return Status::Ok();
}

void Controller::AskSelfTest(NodeSlot& slot, int gpu) {
  slot.gpu_facts().check_asked_ms[static_cast<size_t>(gpu)] = clock_.Now().value();
  if (std::find(slot.selftests.begin(), slot.selftests.end(), gpu) == slot.selftests.end()) slot.selftests.push_back(gpu);
  if (on_work) on_work(slot.record.spec.name);
}

void Controller::SelfTested(NodeSlot& slot, const GpuSelfTest& r) {
  if (r.gpu < 0 || r.gpu >= static_cast<int>(GpusOf(slot).size())) return;
  const size_t g = static_cast<size_t>(r.gpu);
  slot.gpu_facts().check_asked_ms[g] = 0;
  slot.last_check.set(g, fmt::format("{}: {}", r.passed ? "passed" : "failed", r.detail));
  Emit("gpu.selftest", fmt::format("node/{}/gpu/{}", slot.record.spec.name, r.gpu),
       nlohmann::json{{"node", slot.record.spec.name}, {"gpu", r.gpu}, {"passed", r.passed}, {"detail", r.detail}}.dump());
  if (slot.quarantine[g].empty()) {  // undrained by hand meanwhile
    StoreFailed(PersistNode(slot));
    return;
  }
  if (r.passed) {
    StoreFailed(UndrainGpu(slot.record.spec.name, r.gpu));  // persists (the node and GPU exist)
    return;
  }
  slot.gpu_facts().last_fault_ms[g] = clock_.Now().value();  // probation again, from now
  StoreFailed(PersistNode(slot));
}

void Controller::GpuReports(NodeSlot& slot, const gp::Heartbeat& h) {
  // XID events the agent saw (NVML): classified as if reported through the API.
  for (const GpuSample& g : h.gpus) {
    for (int xid : g.xids) (void)GpuXid(h.node, g.index, xid);  // what it did goes to the events; a bad index is the agent's
  }
  // Uncorrected ECC errors that rise mean the GPU's memory can no longer be trusted.
  for (const GpuSample& g : h.gpus) {
    if (g.index < 0 || g.index >= kMaxGpusPerNode || !g.ecc_uncorrected) continue;
    int64_t& seen = slot.gpu_facts().ecc[static_cast<size_t>(g.index)];
    if (seen >= 0 && *g.ecc_uncorrected > seen) {
      Quarantine(slot, g.index, fmt::format("uncorrected ECC errors rose from {} to {}", seen, *g.ecc_uncorrected));
    }
    seen = *g.ecc_uncorrected;
  }
  for (const GpuSelfTest& t : h.selftests) SelfTested(slot, t);
  // The health check: a quarantined GPU that reports in, clean, for the probation period is
  // self-tested by its agent (asked again if no answer came within a minute).
  if (options_.gpu_probation.value() <= 0) return;
  const int64_t now = clock_.Now().value();
  for (const GpuSample& g : h.gpus) {
    if (g.index < 0 || g.index >= static_cast<int>(GpusOf(slot).size())) continue;
    const size_t i = static_cast<size_t>(g.index);
    if (slot.quarantine[i].empty() || now - slot.gpu_facts().last_fault_ms[i] < options_.gpu_probation.value()) continue;
    if (slot.gpu_facts().check_asked_ms[i] > 0 && now - slot.gpu_facts().check_asked_ms[i] < 60'000) continue;
    AskSelfTest(slot, g.index);
  }
}

}  // namespace gp
