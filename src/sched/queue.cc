#include "sched/queue.h"

#include <algorithm>

namespace gp {

ShapeKey ShapeOf(const PendingJob& job) {
  const JobSpec& s = *job.spec;
  return ShapeKey{.mask = job.model_mask, .cpu = s.cpu_per_task.value(), .memory = s.memory_per_task.value(),
                  .gpu_memory = s.min_gpu_memory.value(),
                  .price = s.max_price_per_gpu_hour ? s.max_price_per_gpu_hour->value() : -1,
                  .gpus = s.gpus_per_task, .share = static_cast<int32_t>(s.gpu_share.value()), .tasks = s.tasks,
                  .tenant = job.tenant};
}

size_t ShapeHash::operator()(const ShapeKey& k) const {
  uint64_t h = k.mask * 0x9E3779B97F4A7C15ULL;
  for (int64_t v : {k.cpu, k.memory, k.gpu_memory, k.price, int64_t{k.gpus}, int64_t{k.share}, int64_t{k.tasks},
                    int64_t{k.tenant}}) {
    h = (h ^ static_cast<uint64_t>(v)) * 0x100000001B3ULL;
  }
  return static_cast<size_t>(h);
}

const std::vector<ReasonCount>& Decision::reasons() const {
  static const std::vector<ReasonCount> kNone;
  return reason_set ? *reason_set : kNone;
}

void JobQueue::Add(const PendingJob& job) {
  Remove(job.spec->id);
  const ShapeKey shape = ShapeOf(job);
  auto [it, fresh] = class_of_.try_emplace(shape, static_cast<uint32_t>(classes_.size()));
  if (fresh) classes_.push_back(Class{.shape = shape});
  const QueueOrder* order = job.tenant < tenant_orders_.size() && tenant_orders_[job.tenant] ? tenant_orders_[job.tenant] : order_;
  const QueueKey key = order->Key(job);
  classes_[it->second].jobs.insert(Entry{.key = key, .id = job.spec->id, .job = job});
  where_[job.spec->id.value()] = Where{.cls = it->second, .key = key};
}

bool JobQueue::Remove(JobId id) {
  auto it = where_.find(id.value());
  if (it == where_.end()) return false;
  Class& c = classes_[it->second.cls];
  c.jobs.erase(Entry{.key = it->second.key, .id = id});
  where_.erase(it);
  return true;
}

void JobQueue::SetOrder(TenantIndex tenant, const QueueOrder* order) {
  if (tenant_orders_.size() <= tenant) tenant_orders_.resize(tenant + 1, nullptr);
  tenant_orders_[tenant] = order;
}

void JobQueue::UnblockAll() {
  for (Class& c : classes_) c.blocked_at = 0;
}

void JobQueue::Block(uint32_t cls, uint64_t generation, Decision why) {
  Class& c = classes_[cls];
  c.blocked_at = generation;
  c.last = std::move(why);
}

const Decision* JobQueue::DecisionOf(JobId id) const {
  auto it = where_.find(id.value());
  if (it == where_.end()) return nullptr;
  const Class& c = classes_[it->second.cls];
  return c.last.reason_set || c.blocked_at > 0 ? &c.last : nullptr;
}

int64_t JobQueue::ClassOf(JobId id) const {
  auto it = where_.find(id.value());
  return it == where_.end() ? -1 : static_cast<int64_t>(it->second.cls);
}

std::vector<const JobQueue::Entry*> JobQueue::InOrder() const {
  std::vector<const Entry*> out;
  out.reserve(where_.size());
  for (const Class& c : classes_) {
    for (const Entry& e : c.jobs) out.push_back(&e);
  }
  std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) { return *a < *b; });
  return out;
}

}  // namespace gp
