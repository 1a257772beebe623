#include "sched/sched_state.h"

#include <algorithm>
#include <bit>

namespace gp {

SchedState::SchedState(const Fleet& fleet) : fleet_(&fleet) {
  nodes_.reserve(fleet.nodes.size());
  for (const Node& n : fleet.nodes) AddNode(MakeNodeState(fleet, n));
}

int64_t SchedState::FreeMilli(const NodeState& n) {
  int64_t m = 0;
  for (int i = 0; i < n.gpu_count; ++i) {
    if (!(n.quarantined >> i & 1)) m += n.gpu_free[static_cast<size_t>(i)];
  }
  return m;
}

CapacityKey SchedState::CapacityOf(const NodeState& n) {
  return CapacityKey{.model_bit = n.model_bit, .gpu_count = n.gpu_count, .gpu_memory = n.gpu_memory.value(),
                     .price = n.price.value(), .cpu_total = n.cpu_total.value(), .memory_total = n.memory_total.value()};
}

void SchedState::AddNode(NodeState node) {
  const uint32_t pos = static_cast<uint32_t>(nodes_.size());
  node.id = NodeId{pos};
  nodes_.push_back(node);
  node_gen_.push_back(++generation_);
  index_.Place(pos, node);
  ++capacities_[CapacityOf(node)];
  if (node.gpu_count > 0) ++prices_[node.price.value()];
  free_gpu_milli_ += FreeMilli(node);
  total_gpu_milli_ += int64_t{node.gpu_count} * kWholeGpu.value();
  total_cpu_ += node.cpu_total.value();
  total_memory_ += node.memory_total.value();
  improved_[node.model_bit] = generation_;
}

void SchedState::Changed(NodeId id, const NodeState& before) {
  const NodeState& after = nodes_[id.value()];
  node_gen_[id.value()] = ++generation_;
  index_.Place(id.value(), after);
  const CapacityKey was = CapacityOf(before);
  const CapacityKey now = CapacityOf(after);
  if (was != now) {
    if (--capacities_[was] == 0) capacities_.erase(was);
    ++capacities_[now];
  }
  if (before.gpu_count > 0 && --prices_[before.price.value()] == 0) prices_.erase(before.price.value());
  if (after.gpu_count > 0) ++prices_[after.price.value()];
  free_gpu_milli_ += FreeMilli(after) - FreeMilli(before);
  total_gpu_milli_ += (int64_t{after.gpu_count} - before.gpu_count) * kWholeGpu.value();
  total_cpu_ += after.cpu_total.value() - before.cpu_total.value();
  total_memory_ += after.memory_total.value() - before.memory_total.value();
  if (!NoBetter(after, before)) {
    improved_[after.model_bit] = generation_;
    improved_[before.model_bit] = generation_;
  }
}

Status SchedState::Allocate(const TaskAllocation& a) {
  if (a.node.value() >= nodes_.size()) return Status(StatusCode::kFailedPrecondition, "allocation on an unknown node");
  NodeState before = nodes_[a.node.value()];
  if (Status s = gp::Allocate(nodes_[a.node.value()], a); !s.ok()) return s;
  Changed(a.node, before);
  return Status::Ok();
}

Status SchedState::Release(const TaskAllocation& a) {
  if (a.node.value() >= nodes_.size()) return Status(StatusCode::kFailedPrecondition, "release on an unknown node");
  NodeState before = nodes_[a.node.value()];
  if (Status s = gp::Release(nodes_[a.node.value()], a); !s.ok()) return s;
  Changed(a.node, before);
  return Status::Ok();
}

MicroUsd SchedState::max_price() const { return prices_.empty() ? MicroUsd{0} : MicroUsd{prices_.rbegin()->first}; }

uint64_t SchedState::ImprovedSince(uint64_t mask) const {
  uint64_t g = 0;
  for (uint64_t m = mask; m != 0; m &= m - 1) g = std::max(g, improved_[static_cast<size_t>(std::countr_zero(m))]);
  return g;
}

int64_t ExpectedEnd(const JobSpec& spec, Millis since) {
  if (spec.time_limit.value() > 0) return since.value() + spec.time_limit.value();
  if (spec.estimated_duration) return since.value() + spec.estimated_duration->value();
  return -1;
}

void SchedState::AddRunning(JobId id, RunningJob job) {
  if (running_.count(id.value())) {
    // Placed again: the old entry's nodes forget it.
    ends_.erase({running_[id.value()].end_ms, id.value()});
    for (const TaskAllocation& a : running_[id.value()].tasks) {
      auto& on = running_on_[a.node.value()];
      on.erase(std::remove(on.begin(), on.end(), id.value()), on.end());
    }
  }
  job.gpu_milli = 0;
  for (const TaskAllocation& a : job.tasks) {
    job.gpu_milli += std::popcount(a.gpu_mask) * a.share.value();
    if (running_on_.size() <= a.node.value()) running_on_.resize(a.node.value() + 1);
    auto& on = running_on_[a.node.value()];
    if (std::find(on.begin(), on.end(), id.value()) == on.end()) on.insert(std::upper_bound(on.begin(), on.end(), id.value()), id.value());
  }
  job.end_ms = job.spec ? ExpectedEnd(*job.spec, job.since) : -1;
  if (job.end_ms >= 0) ends_.insert({job.end_ms, id.value()});
  running_[id.value()] = std::move(job);
}

void SchedState::RunningReleased(JobId id, const TaskAllocation& a) {
  auto it = running_.find(id.value());
  if (it == running_.end()) return;
  auto& tasks = it->second.tasks;
  auto t = std::find_if(tasks.begin(), tasks.end(), [&](const TaskAllocation& x) {
    return x.node == a.node && x.gpu_mask == a.gpu_mask && x.share == a.share && x.cpu == a.cpu && x.memory == a.memory;
  });
  if (t == tasks.end()) return;
  it->second.gpu_milli -= std::popcount(t->gpu_mask) * t->share.value();
  tasks.erase(t);
  const bool still_here = std::any_of(tasks.begin(), tasks.end(), [&](const TaskAllocation& x) { return x.node == a.node; });
  if (!still_here && a.node.value() < running_on_.size()) {
    auto& on = running_on_[a.node.value()];
    on.erase(std::remove(on.begin(), on.end(), id.value()), on.end());
  }
  if (tasks.empty()) {
    ends_.erase({it->second.end_ms, id.value()});
    running_.erase(it);
  }
}

void SchedState::RunningStarted(JobId id, Millis at) {
  auto it = running_.find(id.value());
  if (it == running_.end()) return;
  RunningJob& r = it->second;
  r.since = at;
  ends_.erase({r.end_ms, id.value()});
  r.end_ms = r.spec ? ExpectedEnd(*r.spec, at) : -1;
  if (r.end_ms >= 0) ends_.insert({r.end_ms, id.value()});
}

void SchedState::RunningStopping(JobId id) {
  if (auto it = running_.find(id.value()); it != running_.end()) it->second.stopping = true;
}

const RunningJob* SchedState::FindRunning(JobId id) const {
  auto it = running_.find(id.value());
  return it == running_.end() ? nullptr : &it->second;
}

const std::vector<uint64_t>& SchedState::RunningOn(NodeId node) const {
  static const std::vector<uint64_t> kNone;
  return node.value() < running_on_.size() ? running_on_[node.value()] : kNone;
}

TaskAllocation FreePart(const NodeState& n, const TaskAllocation& a) {
  TaskAllocation p = a;
  if (a.share < kWholeGpu) {
    uint16_t m = 0;
    for (int i = 0; i < n.gpu_count; ++i) {
      if ((a.gpu_mask >> i & 1) && !(n.quarantined >> i & 1) && n.gpu_free[static_cast<size_t>(i)] >= a.share.value()) {
        m = static_cast<uint16_t>(m | (1u << i));
      }
    }
    p.gpu_mask = m;
  } else {
    p.gpu_mask = static_cast<uint16_t>(a.gpu_mask & n.WholeFreeMask());
  }
  p.cpu = std::min(a.cpu, n.cpu_free);
  p.memory = std::min(a.memory, n.memory_free);
  return p;
}

bool NoBetter(const NodeState& after, const NodeState& before) {
  for (int i = 0; i < kMaxGpusPerNode; ++i) {
    if (after.gpu_free[static_cast<size_t>(i)] > before.gpu_free[static_cast<size_t>(i)]) return false;
  }
  const auto slots_free = [](const NodeState& n) { return n.task_slots == 0 ? INT32_MAX : n.task_slots - n.tasks; };
  return after.cpu_free <= before.cpu_free && after.memory_free <= before.memory_free &&
         after.health >= before.health &&
         !(after.schedulability == Schedulability::kSchedulable && before.schedulability != Schedulability::kSchedulable) &&
         (before.quarantined & ~after.quarantined) == 0 && slots_free(after) <= slots_free(before) &&
         after.price >= before.price && after.gpu_memory <= before.gpu_memory && after.gpu_count <= before.gpu_count &&
         after.model_bit == before.model_bit && after.site == before.site && after.nic == before.nic;
}

}  // namespace gp
