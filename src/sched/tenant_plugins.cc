// The tenant plugins: admission by quota (Kueue's nominal quota, borrowing and lending within a
// cohort) and the orders between tenants: Slurm's fair share (decayed usage against weight)
// and Mesos' dominant resource fairness (the largest share of GPUs, CPU or memory held now,
// against weight).
#include <algorithm>
#include <numbers>

#include "sched/registry.h"

namespace gp {
namespace {

class Quota final : public AdmissionCheck {
 public:
  std::optional<Reason> Check(const PendingJob& job, const TaskDemand& d, const NodeState& node,
                              const TenantView& view) const override {
    if (d.gpus == 0 || !view.book.limited(job.tenant)) return std::nullopt;
    return view.book.Admit(job.tenant, node.model_bit, static_cast<int64_t>(d.gpus) * d.share.value(), &view.pass);
  }
  bool Ever(const PendingJob& job, const TenantView& view) const override {
    const auto most = view.book.MaxEver(job.tenant, job.model_mask);
    const JobSpec& s = *job.spec;
    return !most || static_cast<int64_t>(s.tasks) * s.gpus_per_task * s.gpu_share.value() <= *most;
  }
};

// Slurm's classic fair-share factor is 2^(-U/S): U the tenant's decayed usage as a fraction of
// all, S its weight as a fraction of all. The factor falls as U/S grows, so ranking by U/S
// (smaller first) is the same order; the common denominators cancel: U / weight.
// One change from Slurm: U also counts what the tenant's running jobs (with this pass's
// placements) will use over one mean life of the decay, held GPUs x H/ln 2 (what decayed usage
// tends to under a constant allocation). With past usage alone, every GPU freed at one instant
// goes to the one tenant furthest below its share and the shares swing from pass to pass;
// counted this way one pass divides what frees by weight, and the past still corrects what
// drifted. Worked example, H = 10 min: a (weight 1) and b (2), neither with history, 12 GPUs
// free: each GPU goes to the smaller (held x 865 s) / weight; a gets 4 and b 8.
class FairShare final : public ShareOrder {
 public:
  double Rank(TenantIndex t, const TenantView& v) const override {
    const double held = static_cast<double>(v.book.held(t).gpu_milli + v.pass.Total(t).gpu_milli) / 1000;
    const double life_ms = static_cast<double>(v.book.half_life().value()) / std::numbers::ln2;
    return (v.book.decayed(t) + held * life_ms) / static_cast<double>(v.book.weight(t));
  }
};

// DRF: a tenant's dominant share is the largest of its shares of the cluster's GPUs, CPU and
// memory, held now (with this pass's placements); divided by its weight. A tenant holding 8 of
// 64 GPUs (12.5%) and 96 of 512 cores (18.75%) has a dominant share of 0.1875; with weight 2,
// 0.094.
class DominantResource final : public ShareOrder {
 public:
  double Rank(TenantIndex t, const TenantView& v) const override {
    const TenantUseDelta& held = v.book.held(t);
    const TenantUseDelta more = v.pass.Total(t);
    auto share = [](int64_t used, int64_t total) { return total > 0 ? static_cast<double>(used) / static_cast<double>(total) : 0.0; };
    const double dominant = std::max({share(held.gpu_milli + more.gpu_milli, v.total_gpu_milli),
                                      share(held.cpu + more.cpu, v.total_cpu), share(held.memory + more.memory, v.total_memory)});
    return dominant / static_cast<double>(v.book.weight(t));
  }
};

}  // namespace

void RegisterTenantPlugins(Registry& r) {
  r.AddAdmission("quota",
                 "a tenant's nominal quota per GPU model, and what it may borrow from its cohort (within its borrowing "
                 "limit and the lenders' lending limits)",
                 Registry::Of<AdmissionCheck, Quota>());
  r.AddShareOrder("fairshare",
                  "between tenants: least decayed GPU-time (half-life), with what its running jobs hold, per unit of weight first (Slurm's fair share); "
                  "within a tenant, its own order (fifo unless set)",
                  Registry::Of<ShareOrder, FairShare>());
  r.AddShareOrder("drf",
                  "between tenants: smallest dominant share (GPUs, CPU, memory held now) per unit of weight first "
                  "(Mesos' DRF); within a tenant, its own order (fifo unless set)",
                  Registry::Of<ShareOrder, DominantResource>());
}

}  // namespace gp
