// Built-in policies: named recipes over the registered plugins. `gpupool policies` lists them.
#include "sched/registry.h"

namespace gp {

void RegisterPolicies(Registry& r) {
  using O = CandidateOrder;
  const std::pair<std::string, double> kPack{"best-fit", 1.0};
  const std::pair<std::string, double> kGang{"gang-locality", 2.0};
  r.AddPolicy({.name = "balanced",
               .description = "FIFO; packs GPUs, then weighs live load, data transfer time and price",
               .queue = "fifo",
               .scorers = {kPack, kGang, {"least-loaded", 0.5}, {"transfer-time", 0.5}, {"cost", 0.25}},
               .order = O::kTightestFirst, .candidate_limit = 16});
  r.AddPolicy({.name = "fifo", .description = "FIFO queue, best-fit packing",
               .queue = "fifo", .scorers = {kPack, kGang}});
  r.AddPolicy({.name = "priority", .description = "highest priority first, best-fit packing",
               .queue = "priority", .scorers = {kPack, kGang}});
  r.AddPolicy({.name = "sjf", .description = "shortest estimated job first, best-fit packing",
               .queue = "sjf", .scorers = {kPack, kGang}});
  r.AddPolicy({.name = "las", .description = "Tiresias least attained service (2 queues), best-fit packing",
               .queue = "las", .scorers = {kPack, kGang}});
  r.AddPolicy({.name = "least-loaded", .description = "FIFO; the node with the lowest L = R / U (the seed's rule)",
               .queue = "fifo", .scorers = {{"least-loaded", 1.0}, kGang},
               .order = O::kEmptiestFirst, .candidate_limit = 64});
  r.AddPolicy({.name = "spread", .description = "FIFO; the emptiest node (spreads load, more fragmentation)",
               .queue = "fifo", .scorers = {{"spread", 1.0}, kGang}, .order = O::kEmptiestFirst});
  r.AddPolicy({.name = "cost", .description = "FIFO; the cheapest GPU-hour, then packing",
               .queue = "fifo", .scorers = {{"cost", 1.0}, {"best-fit", 0.1}, kGang},
               .order = O::kCheapestFirst, .candidate_limit = 16});
  r.AddPolicy({.name = "data-local", .description = "FIFO; the shortest data transfer time, then packing",
               .queue = "fifo", .scorers = {{"transfer-time", 1.0}, {"best-fit", 0.1}, kGang},
               .order = O::kNearestFirst, .candidate_limit = 16});
  r.AddPolicy({.name = "first-fit", .description = "FIFO; the first node in id order that fits (every node judged: for reproductions)",
               .queue = "fifo", .scorers = {{"first-fit", 1.0}}, .candidate_limit = 0});
  r.AddPolicy({.name = "random", .description = "FIFO; a seeded random feasible node (baseline)",
               .queue = "fifo", .scorers = {{"random", 1.0}, kGang}, .candidate_limit = 16});
}

}  // namespace gp
