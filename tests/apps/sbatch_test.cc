// `gpupool sbatch`'s reading of a batch script, case by case: what each directive becomes in
// the submission, the command line over the script, where the directives end, and every
// refusal naming the directive and its line.
#include <gtest/gtest.h>

#include "apps/gpupool/sbatch.h"

namespace gp {
namespace {

SbatchInput Input(const std::string& script, std::vector<std::string> options = {}) {
  return SbatchInput{.script_path = "job.sh", .script_text = script, .options = std::move(options), .submit_dir = "/home/u/run",
                     .submit_host = "login1", .environment = {{"PATH", "/usr/bin"}, {"GPUPOOL_TOKEN", "t0ken"}, {"HOME", "/home/u"},
                                                             {"MODE", "slow"}},
                     .gpu_models = {"H100", "A100"}, .node_gpus = 8};
}

struct Case {
  const char* name;
  const char* directives;  // the script's #SBATCH lines
  std::vector<std::string> options;
  const char* field;       // a field of the request (or "env.NAME")
  nlohmann::json want;
};

TEST(SbatchTest, DirectivesBecomeTheJobsFields) {
  const Case cases[] = {
      {"gres", "#SBATCH --gres=gpu:2\n", {}, "gpus", 2},
      {"gres with a type", "#SBATCH --gres=gpu:h100:4\n", {}, "gpu_model", nlohmann::json::array({"H100"})},
      {"gpus over nodes", "#SBATCH -N 2\n#SBATCH -G 8\n", {}, "gpus", 4},
      {"nodes are tasks", "#SBATCH --nodes=3\n", {}, "tasks", 3},
      {"gpus per task times tasks per node", "#SBATCH --ntasks-per-node=4\n#SBATCH --gpus-per-task=2\n", {}, "gpus", 8},
      {"cpus per task times tasks", "#SBATCH -n 2\n#SBATCH -c 3\n", {}, "cpu", 6},
      {"mem in Slurm's units", "#SBATCH --mem=16G\n", {}, "memory", "16384MiB"},
      {"mem in MB by default", "#SBATCH --mem=4000\n", {}, "memory", "4000MiB"},
      {"time", "#SBATCH -t 1-12:00:00\n", {}, "time", "1-12:00:00"},
      {"array", "#SBATCH --array=0-9%2\n", {}, "array", "0-9%2"},
      {"dependency", "#SBATCH -d afterok:12\n", {}, "dependency", "afterok:12"},
      {"account is the tenant", "#SBATCH -A team-a\n", {}, "tenant", "team-a"},
      {"qos is the priority class", "#SBATCH --qos=high\n", {}, "priority", "high"},
      {"a partition named after a model", "#SBATCH -p a100\n", {}, "gpu_model", nlohmann::json::array({"A100"})},
      {"constraint, any of", "#SBATCH --constraint=[H100|A100]\n", {}, "gpu_model", nlohmann::json::array({"H100", "A100"})},
      {"exclusive takes a whole node", "#SBATCH --exclusive\n", {}, "gpus", 8},
      {"the name", "#SBATCH --job-name=train\n", {}, "name", "train"},
      {"the script's name by default", "", {}, "name", "job.sh"},
      {"the command line over the script", "#SBATCH -J inscript\n", {"-J", "fromcli"}, "name", "fromcli"},
      {"quoted values", "#SBATCH --job-name=\"two words\"   # a comment\n", {}, "name", "two words"},
      {"output pattern", "#SBATCH -o %x-%j.out\n", {}, "env.GPUPOOL_SBATCH_OUTPUT", "%x-%j.out"},
      {"default output of an array", "#SBATCH -a 1-3\n", {}, "env.GPUPOOL_SBATCH_OUTPUT", "slurm-%A_%a.out"},
      {"tasks per node from ntasks", "#SBATCH -N 2\n#SBATCH -n 8\n", {}, "env.SLURM_NTASKS_PER_NODE", "4"},
      {"export ALL passes the environment", "", {}, "env.MODE", "slow"},
      {"export a list", "#SBATCH --export=NONE,MODE=fast\n", {}, "env.MODE", "fast"},
      {"chdir relative to the submit directory", "#SBATCH -D sub\n", {}, "env.GPUPOOL_SBATCH_CHDIR", "/home/u/run/sub"},
      {"the submit directory", "", {}, "env.SLURM_SUBMIT_DIR", "/home/u/run"},
  };
  for (const Case& c : cases) {
    auto r = SbatchRequest(Input(std::string("#!/bin/bash\n") + c.directives + "\necho run\n", c.options));
    ASSERT_TRUE(r) << c.name << ": " << r.error().message();
    const std::string f = c.field;
    const nlohmann::json got = f.starts_with("env.") ? (*r)["env"].value(f.substr(4), nlohmann::json()) : r->value(f, nlohmann::json());
    EXPECT_EQ(got, c.want) << c.name;
  }
}

TEST(SbatchTest, WhatIsNeverPassedOnAndWhereDirectivesEnd) {
  auto r = SbatchRequest(Input("#!/bin/bash\n#SBATCH --gres=gpu:1\necho start\n#SBATCH --gres=gpu:8\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["gpus"], 1) << "directives after the first command are not read (as Slurm's)";
  EXPECT_FALSE((*r)["env"].contains("GPUPOOL_TOKEN")) << "the submitter's token is never exported";
  EXPECT_FALSE((*r)["env"].contains("HOME")) << "the task's HOME is its own";
  EXPECT_EQ((*r)["command"][5], "/bin/bash") << "the script's interpreter, from its #! line";
  auto env_shebang = SbatchRequest(Input("#!/usr/bin/env python3\n#SBATCH -J x\nprint(1)\n"));
  ASSERT_TRUE(env_shebang);
  EXPECT_EQ((*env_shebang)["command"][5], "python3");
}

TEST(SbatchTest, RefusalsNameTheDirectiveAndLine) {
  struct Bad {
    const char* script;
    std::vector<std::string> options;
    const char* says;
  };
  const Bad cases[] = {
      {"#!/bin/sh\n#SBATCH -J a\n#SBATCH --mail-type=END\n", {}, "job.sh:3: #SBATCH --mail-type=END: not supported"},
      {"#!/bin/sh\n#SBATCH -w node1\n", {}, "job.sh:2: #SBATCH -w: not supported"},
      {"#!/bin/sh\n#SBATCH --nodes=two\n", {}, "--nodes=two: expected a whole number"},
      {"#!/bin/sh\n#SBATCH --gres=nic:1\n", {}, "--gres=nic:1: gpupool gives GPUs only"},
      {"#!/bin/sh\n#SBATCH --mem=lots\n", {}, "--mem=lots"},
      {"#!/bin/sh\n#SBATCH -N 2\n#SBATCH --gpus=3\n", {}, "not a whole number of GPUs on each of 2 nodes"},
      {"#!/bin/sh\n#SBATCH --constraint=infiniband\n", {}, "'infiniband' is no GPU model"},
      {"#!/bin/sh\n#SBATCH --job-name\n", {}, "--job-name: needs a value"},
      {"#!/bin/sh\n", {"--reservation=x"}, "sbatch --reservation=x: not supported"},
  };
  for (const Bad& b : cases) {
    auto r = SbatchRequest(Input(b.script, b.options));
    ASSERT_FALSE(r) << b.script;
    EXPECT_NE(r.error().message().find(b.says), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace gp
