// The fleet's and the scheduler's series as they stand (docs/observability.md).
#include <map>

#include "controller/controller.h"
#include "core/models.h"

namespace gp {

void Controller::WriteNodeMetrics(std::string& text, bool gpus_too) const {
  MetricText out(text);
  out.Family("gpupool_metrics_gpu_series", "1 if this exposition holds every GPU's series (DCGM_FI_*), 0 if the fleet is "
             "past --metrics-gpu-series-nodes and they are left to the agents' own /metrics.", prometheus::MetricType::Gauge);
  out.Sample("gpupool_metrics_gpu_series", {}, gpus_too ? 1 : 0);
  if (gpus_too) {
    WriteGpuFamilies(out, [&](const auto& fn) {
      for (const NodeSlot& s : nodes_) {
        const std::vector<Gpu>& gpus = GpusOf(s);
        for (size_t i = 0; i < gpus.size(); ++i) {
          const Gpu& g = gpus[i];
          GpuView v{.index = g.index, .uuid = g.uuid, .model = s.record.gpu_model, .memory = g.memory};
          // Samples come in index order (one a GPU); a node that sent them otherwise is searched.
          if (i < s.record.gpus.size() && s.record.gpus[i].index() == g.index) {
            v.sample = s.record.gpus[i].sample();
          } else {
            for (const KeptGpuSample& x : s.record.gpus) {
              if (x.index() == g.index) v.sample = x.sample();
            }
          }
          if (g.index >= 0 && g.index < kMaxGpusPerNode) v.last_xid = s.gpu_facts().last_xid[static_cast<size_t>(g.index)];
          fn(s.record.spec.name, v);
        }
      }
    });
  }
  WriteNodeFamilies(out, [&](const auto& fn) {
    for (const NodeSlot& s : nodes_) {
      const NodeState& st = cluster_.sched().node(s.record.spec.id);
      const LoadTerms t = ComputeLoad(st.load);
      fn(NodeLoadView{.node = s.record.spec.name, .cpu = static_cast<double>(st.load.cpu.value()) / 1000.0,
                      .gpu = static_cast<double>(st.load.gpu.value()) / 1000.0,
                      .memory = static_cast<double>(st.load.memory.value()) / 1000.0, .r = t.r, .l = t.l});
    }
  });
  if (nodes_.empty()) return;
  out.Family("gpupool_node_gpus_quarantined", "GPUs of the node out of service.", prometheus::MetricType::Gauge);
  for (const NodeSlot& s : nodes_) {
    out.Sample("gpupool_node_gpus_quarantined", {{"node", s.record.spec.name}}, static_cast<double>(s.quarantine.count()));
  }
  out.Family("gpupool_node_up", "1 while the node is heard from (ready, suspect or draining), 0 once it is down.",
             prometheus::MetricType::Gauge);
  for (const NodeSlot& s : nodes_) {
    if (!s.record.released) out.Sample("gpupool_node_up", {{"node", s.record.spec.name}}, s.down ? 0 : 1);
  }
  out.Family("gpupool_node_gpus_free", "Whole GPUs of the node free for placement.", prometheus::MetricType::Gauge);
  for (const NodeSlot& s : nodes_) {
    out.Sample("gpupool_node_gpus_free", {{"node", s.record.spec.name}}, cluster_.sched().node(s.record.spec.id).WholeFreeGpus());
  }
}

void Controller::CollectMetrics(Families& out) const {
  using prometheus::MetricType;
  const int64_t now = clock_.Now().value();
  std::map<std::string, int> nodes_by_state = {{"ready", 0}, {"suspect", 0}, {"down", 0}, {"draining", 0}};
  for (const NodeSlot& s : nodes_) {
    if (!s.record.released) ++nodes_by_state[NodeCondition(s.record.spec.name)];
  }
  auto& nodes = FamilyIn(out, "gpupool_nodes", "Nodes by state.", MetricType::Gauge);
  for (const auto& [state, n] : nodes_by_state) AddValue(nodes, {{"state", state}}, n);
  AddValue(FamilyIn(out, "gpupool_heartbeat_interval_seconds",
                    "The idle heartbeat interval the server asks agents for (it grows with the fleet).", MetricType::Gauge),
           {}, static_cast<double>(heartbeat_interval().value()) / 1000);
  std::map<std::string, int> jobs_by_state;
  for (int s = 0; s <= static_cast<int>(JobState::kTimedOut); ++s) jobs_by_state[std::string(JobStateName(static_cast<JobState>(s)))] = 0;
  for (const auto& [id, j] : cluster_.jobs()) ++jobs_by_state[std::string(JobStateName(j.state))];
  auto& jobs = FamilyIn(out, "gpupool_jobs", "Jobs by state.", MetricType::Gauge);
  for (const auto& [state, n] : jobs_by_state) AddValue(jobs, {{"state", state}}, n);
  // Why queued jobs wait: the first reason of the last pass's decision, per tenant; and the
  // longest any of a tenant's has waited (what an alert on a stuck queue watches).
  std::map<std::pair<std::string, std::string>, int> queue;
  std::map<std::string, int64_t> oldest;
  for (uint64_t id : cluster_.queued()) {
    const JobRecord& j = cluster_.jobs().at(id);
    int64_t& wait = oldest[j.spec.tenant.empty() ? "default" : j.spec.tenant];
    wait = std::max(wait, now - j.spec.submit_time.value());
    std::string reason = "pending";  // not looked at by a pass yet
    if (j.not_before_ms > now) {
      reason = "backoff";
    } else if (const Decision* d = cluster_.DecisionOf(JobId{id}); d && !d->reasons().empty()) {
      reason = std::string(ReasonName(d->reasons().front().example.code));
      if (d->outcome == Outcome::kNever) reason = "never-fits:" + reason;
    }
    ++queue[{j.spec.tenant.empty() ? "default" : j.spec.tenant, reason}];
  }
  auto& held = FamilyIn(out, "gpupool_tenant_gpus_in_use", "GPUs a tenant's running jobs hold, by GPU model.", MetricType::Gauge);
  for (const auto& [tenant, use] : TenantsInUse()) {
    for (const auto& [model, gpus] : use.gpus) AddValue(held, {{"tenant", tenant.empty() ? "default" : tenant}, {"model", model}}, gpus);
  }
  // Quotas (Kueue's ClusterQueue figures) and fair share, per tenant that has a quota.
  auto& quota = FamilyIn(out, "gpupool_tenant_quota_gpus", "A tenant's nominal quota, by GPU model.", MetricType::Gauge);
  auto& borrowed = FamilyIn(out, "gpupool_tenant_borrowed_gpus", "GPUs a tenant holds beyond its quota, borrowed from its cohort.",
                            MetricType::Gauge);
  auto& lent = FamilyIn(out, "gpupool_tenant_lent_gpus", "GPUs of a tenant's quota that others in its cohort hold.", MetricType::Gauge);
  auto& decayed = FamilyIn(out, "gpupool_tenant_decayed_usage_gpu_seconds",
                           "A tenant's GPU usage (GPU-seconds) decayed with the fair-share half-life.", MetricType::Gauge);
  for (const TenantRow& r : cluster_.tenants().Rows(fleet_)) {
    AddValue(decayed, {{"tenant", r.name}}, r.decayed_gpu_ms / 1'000.0);
    for (const TenantModelRow& m : r.models) {
      if (m.nominal < 0) continue;
      const std::vector<std::pair<std::string, std::string>> labels = {{"tenant", r.name}, {"model", m.model}};
      AddValue(quota, labels, static_cast<double>(m.nominal) / 1000);
      AddValue(borrowed, labels, static_cast<double>(m.borrowed) / 1000);
      AddValue(lent, labels, static_cast<double>(m.lent) / 1000);
    }
  }
  auto& q = FamilyIn(out, "gpupool_queue_length", "Queued jobs by tenant and the reason they wait.", MetricType::Gauge);
  for (const auto& [k, n] : queue) AddValue(q, {{"tenant", k.first}, {"reason", k.second}}, n);
  auto& waited = FamilyIn(out, "gpupool_queue_oldest_wait_seconds", "The longest a tenant's queued job has waited since it was submitted.",
                          MetricType::Gauge);
  for (const auto& [tenant, ms] : oldest) AddValue(waited, {{"tenant", tenant}}, static_cast<double>(std::max<int64_t>(0, ms)) / 1000);
  AddValue(FamilyIn(out, "gpupool_placements_total", "Jobs placed (attempts started) since the server started.", MetricType::Counter),
           {}, static_cast<double>(cluster_.placed_total()));
  AddValue(FamilyIn(out, "gpupool_failovers_total", "Jobs moved off a failed node or GPU since the server started.", MetricType::Counter),
           {}, static_cast<double>(cluster_.failovers_total()));
  AddValue(FamilyIn(out, "gpupool_preemptions_total",
                    "Running jobs stopped to make room for a job that stands higher, or to give a tenant back its quota, "
                    "since the server started.", MetricType::Counter),
           {}, static_cast<double>(cluster_.preemptions_total()));
  AddValue(FamilyIn(out, "gpupool_server_stalls_total", "Times the server's own loop stalled over 700 ms; no node was blamed for the silence.",
                    MetricType::Counter), {}, static_cast<double>(stats_.stalls));
  AddValue(FamilyIn(out, "gpupool_heartbeats_unread_at_deadline_total",
                    "Nodes found silent past the down threshold whose next heartbeat was waiting unread on their "
                    "connection (the server was behind): not declared down.",
                    MetricType::Counter), {}, static_cast<double>(stats_.unheard));
  AddValue(FamilyIn(out, "gpupool_log_bytes_dropped_total", "Job output agents dropped: jobs that wrote faster than their node ships.",
                    MetricType::Counter), {}, static_cast<double>(stats_.log_bytes_dropped));
  AddValue(FamilyIn(out, "gpupool_schedule_passes_total", "Scheduling passes since the server started.", MetricType::Counter), {},
           static_cast<double>(stats_.passes));
}

}  // namespace gp
