#include "sched/pending.h"

#include <fmt/format.h>

namespace gp {

Result<PendingJob> CompileJob(const JobSpec& spec, const Fleet& fleet) {
  if (Status s = ValidateJobSpec(spec); !s.ok()) return tl::unexpected(s);
  PendingJob p{.spec = &spec};
  if (spec.gpus_per_task == 0) {
    p.model_mask = ~uint64_t{0};  // CPU-only work may run on any node
  } else if (spec.gpu_models.empty()) {
    for (size_t m = 0; m < fleet.models.size(); ++m) p.model_mask |= uint64_t{1} << m;
  } else {
    for (const std::string& name : spec.gpu_models) {
      if (auto m = fleet.FindModel(name)) p.model_mask |= uint64_t{1} << m->value();
    }
  }
  if (spec.data) {
    auto site = fleet.FindSite(spec.data->site);
    if (!site) return InvalidArgument(fmt::format("data.site: unknown site '{}'", spec.data->site));
    p.data_site = *site;
  }
  return p;
}

std::vector<std::string> UnknownModels(const JobSpec& spec, const Fleet& fleet) {
  std::vector<std::string> out;
  for (const std::string& name : spec.gpu_models) {
    if (!fleet.FindModel(name)) out.push_back(name);
  }
  return out;
}

}  // namespace gp
