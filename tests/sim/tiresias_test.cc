// Where gpupool's rules and Tiresias' simulator's rules agree, the schedules agree exactly.
// Tiresias' "fjf" under its "count" placement (SymbioticLab/Tiresias, simulator/run_sim.py
// fit_first_sim_jobs with cluster.none_placement) is skip-ahead FIFO over a GPU count: at each
// instant, jobs that end give their GPUs back, arrivals join the end of the queue, and the queue
// is scanned in order, starting every job whose GPUs are free. gpupool's `fifo` with first-fit
// on a fleet of 1-GPU nodes (where placing is counting) must give every job the same start.
// The reference below is written from those rules, independently of the engine.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <vector>

#include "adapters/fleet_loader.h"
#include "sim/engine.h"
#include "sim_fixtures.h"

namespace gp {
namespace {

using testing::Job;

// Start time (ms) of each job under counting skip-ahead FIFO on `total` GPUs.
std::vector<int64_t> CountingFjf(const Trace& trace, int total) {
  std::vector<size_t> order(trace.jobs.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return trace.jobs[a].submit < trace.jobs[b].submit; });
  std::vector<int64_t> start(trace.jobs.size(), -1);
  std::multimap<int64_t, size_t> ends;
  std::vector<size_t> pending;
  size_t next = 0;
  int free = total;
  while (next < order.size() || !pending.empty()) {
    int64_t t = INT64_MAX;
    if (next < order.size()) t = trace.jobs[order[next]].submit.value();
    if (!ends.empty()) t = std::min(t, ends.begin()->first);
    if (t == INT64_MAX) break;  // nothing can ever start
    while (!ends.empty() && ends.begin()->first == t) {
      free += trace.jobs[ends.begin()->second].gpus;
      ends.erase(ends.begin());
    }
    while (next < order.size() && trace.jobs[order[next]].submit.value() == t) pending.push_back(order[next++]);
    std::vector<size_t> still;
    for (size_t k : pending) {
      if (free > 0 && trace.jobs[k].gpus <= free) {
        free -= trace.jobs[k].gpus;
        start[k] = t;
        ends.emplace(t + trace.jobs[k].duration.value(), k);
      } else {
        still.push_back(k);
      }
    }
    pending = std::move(still);
  }
  return start;
}

void ExpectSameStarts(const Trace& trace, int gpus) {
  const Fleet fleet = *ParseFleetShorthand(fmt::format("{}x1xV100", gpus));
  auto r = RunSimulation(fleet, trace, testing::P("fifo/first-fit"), {});
  ASSERT_TRUE(r) << r.error().message();
  const std::vector<int64_t> want = CountingFjf(trace, gpus);
  ASSERT_EQ(r->per_job.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    ASSERT_EQ(r->per_job[k].start.value(), want[k]) << "job " << k << " (" << trace.jobs[k].name << ", line "
                                                    << trace.jobs[k].line << ")";
  }
}

TEST(TiresiasAgreement, FifoIsCountingFjfOnAPhillySlice) {
  auto all = ReadTrace(testing::Traces() + "/pollux-philly/philly.csv", "philly", {});
  ASSERT_TRUE(all) << all.error().message();
  Trace slice{.jobs = {all->jobs.begin(), all->jobs.begin() + 2000}};
  // The first 2,000 rows, their submit times from the earliest of them (as the slice's own trace).
  Millis first{INT64_MAX};
  for (const TraceJob& j : slice.jobs) first = std::min(first, j.submit);
  for (TraceJob& j : slice.jobs) j.submit -= first;
  ExpectSameStarts(slice, 128);
}

RC_GTEST_PROP(TiresiasAgreement, FifoIsCountingFjf, ()) {
  const int gpus = *rc::gen::inRange(1, 17);
  Trace trace;
  const int jobs = *rc::gen::inRange(1, 60);
  for (int k = 0; k < jobs; ++k) {
    // Whole seconds, so that arrivals and ends often fall on the same instant.
    trace.jobs.push_back(Job("j", *rc::gen::inRange(0, 300), *rc::gen::inRange(1, 200), *rc::gen::inRange(1, gpus + 1)));
  }
  const Fleet fleet = *ParseFleetShorthand(fmt::format("{}x1xV100", gpus));
  auto r = RunSimulation(fleet, trace, testing::P("fifo/first-fit"), {});
  RC_ASSERT(r.has_value());
  const std::vector<int64_t> want = CountingFjf(trace, gpus);
  for (size_t k = 0; k < want.size(); ++k) RC_ASSERT(r->per_job[k].start.value() == want[k]);
}

}  // namespace
}  // namespace gp
