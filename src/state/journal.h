// Where the controller makes its records durable. A Put returns only once the record would
// survive a crash (the SQLite journal commits in WAL mode with synchronous=FULL), so the
// controller acknowledges a job only after PutJob succeeded. Records are opaque JSON text
// (wire/ encodes them). Called from the controller's event loop only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gp {

struct JournalContents {
  std::map<uint64_t, std::string> jobs;     // id -> JSON
  std::map<std::string, std::string> nodes; // name -> JSON
  std::map<std::string, std::string> meta;
};

class Journal {
 public:
  virtual ~Journal() = default;
  // Writes all of them in one transaction (group commit).
  virtual Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs) = 0;
  virtual Status PutNode(std::string_view name, std::string_view json) = 0;
  virtual Status PutMeta(std::string_view key, std::string_view value) = 0;
  virtual Result<JournalContents> Load() = 0;
};

// For tests and `sim`: keeps everything in memory.
class MemoryJournal final : public Journal {
 public:
  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs) override {
    for (const auto& [id, json] : jobs) c_.jobs[id] = json;
    return Status::Ok();
  }
  Status PutNode(std::string_view name, std::string_view json) override {
    c_.nodes[std::string(name)] = json;
    return Status::Ok();
  }
  Status PutMeta(std::string_view key, std::string_view value) override {
    c_.meta[std::string(key)] = value;
    return Status::Ok();
  }
  Result<JournalContents> Load() override { return c_; }

 private:
  JournalContents c_;
};

}  // namespace gp
