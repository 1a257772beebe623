// The trace readers on the shared traces (row counts from each folder's README), and on broken
// rows, whose errors must name the file and line.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "sim/trace.h"
#include "sim_fixtures.h"

namespace gp {
namespace {

using testing::Traces;
using testing::WriteTemp;

struct TraceCase {
  const char* path;
  const char* format;
  size_t jobs;
};

TEST(TraceReadersTest, SharedTracesDetectAndReadEveryRow) {
  const TraceCase cases[] = {
      {"pollux-philly/philly.csv", "philly", 82'247},
      {"tiresias/60_job.csv", "tiresias", 60},
      {"gavel/physical_cluster/small_test.trace", "gavel", 20},
      {"shockwave/traces/120_0.2_5_100_40_25_0,0.5,0.5_0.6,0.3,0.09,0.01_multigpu_dynamic.trace", "shockwave", 120},
      {"alibaba-gpu-v2023/csv/openb_pod_list_default.csv", "alibaba", 8'152},
  };
  for (const TraceCase& c : cases) {
    auto t = ReadTrace(Traces() + "/" + c.path, "", {});
    ASSERT_TRUE(t) << c.path << ": " << t.error().message();
    EXPECT_EQ(t->format, c.format) << c.path;
    EXPECT_EQ(t->jobs.size(), c.jobs) << c.path;
  }
}

TEST(TraceReadersTest, GavelMsrTracesTotalFifteenThousand) {
  size_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(Traces() + "/gavel/msr-philly-seed0")) {
    auto t = ReadTrace(e.path().string(), "", {});
    ASSERT_TRUE(t) << t.error().message();
    total += t->jobs.size();
  }
  EXPECT_EQ(total, 15'264u);
}

TEST(TraceReadersTest, PhillyRowsBecomeRelativeTimes) {
  auto t = ReadTrace(Traces() + "/pollux-philly/philly.csv", "philly", {});
  ASSERT_TRUE(t);
  Millis first{INT64_MAX};
  for (const TraceJob& j : t->jobs) first = std::min(first, j.submit);
  EXPECT_EQ(first.value(), 0);
  // Row 2 of the file: 2017-10-09 07:01:55, 66 s, 1 GPU.
  EXPECT_EQ(t->jobs[0].line, 2);
  EXPECT_EQ(t->jobs[0].duration.value(), 66'000);
  EXPECT_EQ(t->jobs[0].gpus, 1);
  // Row 3 was submitted 48 min 52 s before row 2 (06:13:03 the same day).
  EXPECT_EQ((t->jobs[0].submit - t->jobs[1].submit).value(), (48 * 60 + 52) * 1000);
}

// Shockwave's trace gives each job's isolated duration; steps / V100 throughput must agree.
TEST(TraceReadersTest, ShockwaveDurationsMatchThroughputTable) {
  const std::string path =
      Traces() + "/shockwave/traces/120_0.2_5_100_40_25_0,0.5,0.5_0.6,0.3,0.09,0.01_multigpu_dynamic.trace";
  auto t = ReadTrace(path, "", {});
  ASSERT_TRUE(t);
  auto file = std::ifstream(path);
  std::string line;
  for (size_t i = 0; i < t->jobs.size() && std::getline(file, line); ++i) {
    std::vector<std::string> f;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) f.push_back(line.substr(start, tab - start));
    f.push_back(line.substr(start));
    const double given_s = std::stod(f[10]);
    EXPECT_NEAR(static_cast<double>(t->jobs[i].duration.value()) / 1000.0, given_s, 1.0) << "line " << i + 1;
  }
}

TEST(TraceReadersTest, GavelDurationsDifferByGpuModel) {
  auto t = ReadTrace(Traces() + "/gavel/msr-philly-seed0/0e4a51.trace", "", {});
  ASSERT_TRUE(t);
  const TraceJob& j = t->jobs[0];  // Transformer (batch size 128), 95,121 steps, 1 GPU
  ASSERT_EQ(j.duration_by_model.size(), 3u);
  Millis k80{0};
  Millis v100{0};
  for (const auto& [model, d] : j.duration_by_model) {
    if (model == "K80") k80 = d;
    if (model == "V100") v100 = d;
  }
  // 95,121 steps at 5.446 steps/s on a V100 is 17,466 s; at 0.98 steps/s on a K80, 96,906 s.
  EXPECT_NEAR(static_cast<double>(v100.value()) / 1000, 95121 / 5.44610521981264, 1);
  EXPECT_NEAR(static_cast<double>(k80.value()) / 1000, 95121 / 0.9815827061299781, 1);
  EXPECT_EQ(j.duration, v100) << "the reference duration is the V100's";
}

struct BadCase {
  const char* name;
  const char* file;
  std::string text;
  std::string want;  // after "<path>:"
};

constexpr const char* kSubmitted =
    R"({"type":"io.gpupool.job.submitted","time":"2026-01-01T00:00:00.000Z","data":{"id":"1","tasks":1,"gpus_per_task":1}})";

// A job.submitted event of job 1 with the given data fields.
std::string Submitted(const std::string& fields) {
  return R"({"type":"io.gpupool.job.submitted","time":"2026-01-01T00:00:00Z","data":{"id":"1",)" + fields + "}}";
}

TEST(TraceReadersTest, BrokenRowsNameFileAndLine) {
  const std::string philly_head = "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,66.0,1,66.0,a\n";
  const std::string ali_head =
      "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";
  const BadCase cases[] = {
      {"gpus not a number", "p1.csv", philly_head + "2017-10-09 07:01:56,66.0,two,66.0,a\n", "3: num_gpus: 'two' is not a whole number"},
      {"bad timestamp", "p2.csv", philly_head + "2017-13-09 07:01:56,66.0,1,66.0,a\n", "3: timestamp: '2017-13-09 07:01:56'"},
      {"negative duration", "p3.csv", philly_head + "2017-10-09 07:01:56,-5,1,66.0,a\n", "3: duration: -5 is out of range"},
      {"short row", "p4.csv", philly_head + "2017-10-09 07:01:56,66.0\n", "3: expected 5 fields, got 2"},
      {"missing column", "t1.csv", "job_id,num_gpu,submit_time,iterations,model_name,interval\n", "1: missing column 'duration'"},
      {"absurd gpus", "t2.csv", "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n0,-4,0,1,m,1,1\n",
       "2: GPU count -4 is out of range"},
      {"deleted before created", "a1.csv", ali_head + "p,1000,100,1,1000,,LS,Running,100,50,\n", "2: deletion_time 50 is before"},
      {"gpu_milli out of range", "a2.csv", ali_head + "p,1000,100,1,1500,,LS,Running,0,50,0\n", "2: gpu_milli: 1500 is out of range"},
      {"gavel short", "g1.trace", "ResNet-18 (batch size 16)\tcmd\t-n\t1\t100\t0\t1\nB\tcmd\t-n\t1\n", "2: expected 7 tab-separated fields, got 4"},
      {"gavel unknown job", "g2.trace", "Nope (batch size 1)\tcmd\t-n\t1\t100\t0\t1\n", "1: no throughput for ('Nope (batch size 1)', 1)"},
      {"events: not JSON", "e1.ndjson", std::string(kSubmitted) + "\n{oops\n", "2: not a JSON object"},
      {"events: bad time", "e2.ndjson",
       R"({"type":"io.gpupool.job.placed","time":"yesterday","data":{"id":"1"}})", "1: time: 'yesterday' is not"},
      {"events: no data", "e3.ndjson", R"({"type":"io.gpupool.job.placed","time":"2026-01-01T00:00:00Z"})", "1: field 'data'"},
      {"events: tasks out of range", "e4.ndjson", Submitted(R"("tasks":0)"),
       "1: field 'data.tasks': expected a whole number in 1..4096"},
      {"events: share out of range", "e6.ndjson", Submitted(R"("gpu_share":1e300)"),
       "1: field 'data.gpu_share'"},
      {"events: cpu out of range", "e7.ndjson", Submitted(R"("cpu_per_task_milli":9e18)"),
       "1: a field of data is out of range"},
      {"events: wrong type", "e5.ndjson", Submitted(R"("gpu_models":[1,2])"),
       "1: job 1: a field of the wrong type"},
  };
  for (const BadCase& c : cases) {
    const std::string path = WriteTemp(c.file, c.text);
    TraceOptions options;
    if (std::string(c.file).ends_with(".trace")) options.throughputs = Traces() + "/gavel/simulation_throughputs.json";
    auto t = ReadTrace(path, "", options);
    ASSERT_FALSE(t.has_value()) << c.name;
    EXPECT_NE(t.error().message().find(path + ":" + c.want), std::string::npos) << c.name << ": got " << t.error().message();
  }
}

TEST(TraceReadersTest, UnknownFormatsSayWhy) {
  auto pollux = ReadTrace(Traces() + "/pollux-philly/workloads/workload-1.csv", "", {});
  ASSERT_FALSE(pollux);
  EXPECT_NE(pollux.error().message().find("app profiles"), std::string::npos);
  auto nonsense = ReadTrace(WriteTemp("x.csv", "what,is,this\n1,2,3\n"), "", {});
  ASSERT_FALSE(nonsense);
  EXPECT_NE(nonsense.error().message().find("--trace-format"), std::string::npos);
  auto named = ReadTrace(WriteTemp("y.csv", "a\n"), "slurm", {});
  ASSERT_FALSE(named);
  EXPECT_NE(named.error().message().find("known: philly"), std::string::npos);
}

}  // namespace
}  // namespace gp

namespace gp {
namespace {

// A live pool's log: each job as submitted (shape), run from its last placement to its end;
// what never ran or is still running is left out; other events are skipped.
TEST(TraceReadersTest, AnEventLogBecomesTheJobsThatRan) {
  auto ev = [](const char* type, const char* time, const std::string& data) {
    return fmt::format(R"({{"specversion":"1.0","type":"io.gpupool.{}","time":"{}","data":{}}})", type, time, data) + "\n";
  };
  const std::string log =
      ev("node.joined", "2026-01-01T10:00:00.000Z", R"({"node":"a"})") +
      ev("job.submitted", "2026-01-01T10:00:01.000Z", R"({"id":"7","name":"gang","tasks":2,"gpus_per_task":4,"gpu_models":["H100"],"priority":2})") +
      ev("job.submitted", "2026-01-01T10:00:01.500Z", R"({"id":"8","name":"never-ran","tasks":1,"gpus_per_task":1})") +
      ev("job.placed", "2026-01-01T10:00:02.250Z", R"({"id":"7"})") +
      ev("job.started", "2026-01-01T10:00:02.300Z", R"({"id":"7"})") +
      ev("job.cancelled", "2026-01-01T10:00:03.000Z", R"({"id":"8"})") +
      ev("job.placed", "2026-01-01T10:00:05.000Z", R"({"id":"7"})") +  // placed again after a failover
      ev("job.succeeded", "2026-01-01T10:01:05.000Z", R"({"id":"7"})") +
      ev("job.submitted", "2026-01-01T10:00:06.000Z", R"({"id":"9","name":"cpu","tasks":3,"gpus_per_task":0,"cpu_per_task_milli":500})") +
      ev("job.placed", "2026-01-01T10:00:06.010Z", R"({"id":"9"})") +
      ev("job.submitted", "2026-01-01T10:00:07.000Z", R"({"id":"10","name":"still-running","tasks":1,"gpus_per_task":1})") +
      ev("job.placed", "2026-01-01T10:00:07.010Z", R"({"id":"10"})") +
      ev("job.failed", "2026-01-01T10:00:08.010Z", R"({"id":"9"})");
  const std::string path = testing::WriteTemp("live.ndjson", log);
  auto t = ReadTrace(path, "", {});
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->format, "events");
  ASSERT_EQ(t->jobs.size(), 2u);
  const TraceJob& gang = t->jobs[0];
  EXPECT_EQ(gang.name, "gang");
  EXPECT_EQ(gang.tasks, 2);
  EXPECT_EQ(gang.gpus, 8);
  EXPECT_EQ(gang.submit.value(), 0);
  EXPECT_EQ(gang.duration.value(), 60'000) << "from its last placement to its end";
  EXPECT_EQ(gang.gpu_models, std::vector<std::string>{"H100"});
  EXPECT_EQ(gang.priority, 2);
  const TraceJob& cpu = t->jobs[1];
  EXPECT_EQ(cpu.tasks, 3);
  EXPECT_EQ(cpu.gpus, 0);
  EXPECT_EQ(cpu.cpu.value(), 1500);
  EXPECT_EQ(cpu.submit.value(), 5'000);
  EXPECT_EQ(cpu.duration.value(), 2'000);
}

}  // namespace
}  // namespace gp
