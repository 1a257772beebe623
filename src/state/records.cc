#include "state/records.h"

#include <fmt/format.h>

#include <charconv>

namespace gp {

std::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kStarting: return "starting";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
    case JobState::kTimedOut: return "timed-out";
  }
  return "?";
}

Result<JobState> ParseJobState(std::string_view s) {
  for (auto st : {JobState::kQueued, JobState::kStarting, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                  JobState::kCancelled, JobState::kTimedOut}) {
    if (JobStateName(st) == s) return st;
  }
  return InvalidArgument(
      fmt::format("unknown job state '{}'; expected queued, starting, running, succeeded, failed, cancelled or timed-out", s));
}

int64_t ArraySpec::size() const {
  int64_t n = 0;
  for (const IndexRange& r : ranges) n += r.size();
  return n;
}

int64_t ArraySpec::IndexAt(int64_t position) const {
  for (const IndexRange& r : ranges) {
    if (position < r.size()) return r.first + position * r.step;
    position -= r.size();
  }
  return -1;
}

std::optional<int64_t> ArraySpec::PositionOf(int64_t index) const {
  int64_t base = 0;
  for (const IndexRange& r : ranges) {
    if (index >= r.first && index <= r.last && (index - r.first) % r.step == 0) return base + (index - r.first) / r.step;
    base += r.size();
  }
  return std::nullopt;
}

int64_t ArraySpec::min_index() const {
  int64_t m = INT64_MAX;
  for (const IndexRange& r : ranges) m = std::min(m, r.first);
  return ranges.empty() ? 0 : m;
}

int64_t ArraySpec::max_index() const {
  int64_t m = INT64_MIN;
  for (const IndexRange& r : ranges) m = std::max(m, r.first + (r.size() - 1) * r.step);
  return ranges.empty() ? 0 : m;
}

std::string ArraySpec::ToString() const {
  std::string out;
  for (const IndexRange& r : ranges) {
    if (!out.empty()) out += ",";
    out += r.first == r.last ? fmt::format("{}", r.first) : fmt::format("{}-{}", r.first, r.last);
    if (r.step != 1) out += fmt::format(":{}", r.step);
  }
  if (max_running > 0) out += fmt::format("%{}", max_running);
  return out;
}

namespace {
std::optional<int64_t> Whole(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}
}  // namespace

Result<ArraySpec> ParseArraySpec(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument(fmt::format("array '{}': {}; expected e.g. 0-9999, 0-9999%64, 1,3,10-20:5", text, why));
  };
  ArraySpec a;
  std::string_view list = text;
  if (const size_t pct = text.find('%'); pct != std::string_view::npos) {
    auto n = Whole(text.substr(pct + 1));
    if (!n || *n < 1 || *n > kMaxArraySize) return bad("the limit after % must be a whole number from 1");
    a.max_running = static_cast<int>(*n);
    list = text.substr(0, pct);
  }
  if (list.empty()) return bad("no indexes");
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    std::string_view part = list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    IndexRange r;
    std::string_view span = part;
    if (const size_t colon = part.find(':'); colon != std::string_view::npos) {
      auto st = Whole(part.substr(colon + 1));
      if (!st || *st < 1) return bad(fmt::format("step in '{}' must be a whole number from 1", part));
      r.step = *st;
      span = part.substr(0, colon);
    }
    const size_t dash = span.find('-');
    auto first = Whole(span.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : Whole(span.substr(dash + 1));
    if (!first || !last) return bad(fmt::format("'{}' is not an index or a range of indexes (whole numbers, 0 or more)", part));
    if (*last < *first) return bad(fmt::format("range '{}' ends before it starts", part));
    if (*last > 4'000'000'000) return bad(fmt::format("index {} is too large (at most 4000000000)", *last));
    r.first = *first;
    r.last = *first + (*last - *first) / r.step * r.step;  // the last index the step reaches
    a.ranges.push_back(r);
    if (a.size() > kMaxArraySize) return bad(fmt::format("more than {} elements", kMaxArraySize));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  // An index named twice would be two elements with one index: refused.
  std::vector<IndexRange> sorted = a.ranges;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    for (size_t k = i + 1; k < sorted.size() && sorted[k].first <= sorted[i].last; ++k) {
      for (int64_t x = sorted[k].first; x <= std::min(sorted[k].last, sorted[i].last); x += sorted[k].step) {
        if ((x - sorted[i].first) % sorted[i].step == 0) return bad(fmt::format("index {} is named twice", x));
      }
    }
  }
  return a;
}

Status ParseDependencies(std::string_view text, JobExtras& extras) {
  extras.after.clear();
  extras.singleton = false;
  if (text.find('?') != std::string_view::npos) {
    return Status(StatusCode::kInvalidArgument, "field 'dependency': '?' (any of) is not supported; give every dependency joined by ','");
  }
  for (std::string_view rest = text; !rest.empty();) {
    const size_t comma = rest.find(',');
    const std::string_view one = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (one == "singleton") {
      extras.singleton = true;
      continue;
    }
    const size_t colon = one.find(':');
    const std::string_view kind = one.substr(0, colon);
    DependencyKind k;
    if (kind == "afterok") k = DependencyKind::kAfterOk;
    else if (kind == "afterany") k = DependencyKind::kAfterAny;
    else if (kind == "afternotok") k = DependencyKind::kAfterNotOk;
    else {
      return Status(StatusCode::kInvalidArgument, fmt::format("field 'dependency': '{}' is not a dependency; expected afterok:ID[:ID...], "
                                         "afterany:ID, afternotok:ID or singleton",
                                         std::string(one.substr(0, 64))));
    }
    if (colon == std::string_view::npos) return Status(StatusCode::kInvalidArgument, fmt::format("field 'dependency': {} names no job", kind));
    for (std::string_view ids = one.substr(colon + 1); ;) {
      const size_t c = ids.find(':');
      const std::string_view id = ids.substr(0, c);
      uint64_t job = 0;
      auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), job);
      if (ec != std::errc() || p != id.data() + id.size() || job == 0) {
        return Status(StatusCode::kInvalidArgument, fmt::format("field 'dependency': '{}' is not a job id", std::string(id.substr(0, 32))));
      }
      extras.after.push_back(Dependency{.kind = k, .job = job});
      if (c == std::string_view::npos) break;
      ids = ids.substr(c + 1);
    }
    if (extras.after.size() > 1000) return Status(StatusCode::kInvalidArgument, "field 'dependency': at most 1000 jobs");
  }
  return Status::Ok();
}

std::string DependencyText(const JobExtras& extras) {
  std::string out;
  for (size_t i = 0; i < extras.after.size(); ++i) {
    const Dependency& d = extras.after[i];
    const bool same = i > 0 && extras.after[i - 1].kind == d.kind;
    if (same) {
      out += fmt::format(":{}", d.job);
      continue;
    }
    const char* kind = d.kind == DependencyKind::kAfterOk ? "afterok" : d.kind == DependencyKind::kAfterAny ? "afterany" : "afternotok";
    out += fmt::format("{}{}:{}", out.empty() ? "" : ",", kind, d.job);
  }
  if (extras.singleton) out += out.empty() ? "singleton" : ",singleton";
  return out;
}

}  // namespace gp
