#include "state/records.h"

#include <fmt/format.h>

namespace gp {

std::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kStarting: return "starting";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

Result<JobState> ParseJobState(std::string_view s) {
  for (auto st : {JobState::kQueued, JobState::kStarting, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                  JobState::kCancelled}) {
    if (JobStateName(st) == s) return st;
  }
  return InvalidArgument(fmt::format("unknown job state '{}'; expected queued, starting, running, succeeded, failed or cancelled", s));
}

}  // namespace gp
