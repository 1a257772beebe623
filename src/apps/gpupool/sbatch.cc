#include "apps/gpupool/sbatch.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <set>
#include <sstream>

namespace gp {
namespace {

using nlohmann::json;

// The options gpupool takes, as Slurm spells them: long name, short letter, whether a value
// follows.
struct OptionDef {
  const char* name;
  char letter;
  bool value;
};
constexpr OptionDef kOptions[] = {
    {"job-name", 'J', true},   {"gres", 0, true},          {"gpus", 'G', true},           {"gpus-per-node", 0, true},
    {"gpus-per-task", 0, true}, {"nodes", 'N', true},       {"ntasks", 'n', true},         {"ntasks-per-node", 0, true},
    {"cpus-per-task", 'c', true}, {"mem", 0, true},         {"time", 't', true},           {"array", 'a', true},
    {"output", 'o', true},      {"error", 'e', true},       {"chdir", 'D', true},          {"export", 0, true},
    {"dependency", 'd', true},  {"partition", 'p', true},   {"account", 'A', true},        {"qos", 'q', true},
    {"constraint", 'C', true},  {"exclusive", 0, false},
};

std::string Supported() {
  std::string out;
  for (const OptionDef& o : kOptions) out += fmt::format("{}--{}", out.empty() ? "" : ", ", o.name);
  return out;
}

// Words of a directive's line, as a shell would split them (quotes kept together), up to a '#'.
std::vector<std::string> Words(std::string_view line) {
  std::vector<std::string> out;
  std::string cur;
  char quote = 0;
  bool any = false;
  for (char ch : line) {
    if (quote) {
      if (ch == quote) quote = 0;
      else cur += ch;
      continue;
    }
    if (ch == '"' || ch == '\'') {
      quote = ch;
      any = true;
      continue;
    }
    if (ch == '#') break;
    if (std::isspace(static_cast<unsigned char>(ch))) {
      if (any || !cur.empty()) out.push_back(cur);
      cur.clear();
      any = false;
      continue;
    }
    cur += ch;
  }
  if (any || !cur.empty()) out.push_back(cur);
  return out;
}

// Options in `words` into `got` (name -> value); `where` prefixes errors ("job.sh:4: #SBATCH").
Status ParseOptions(const std::vector<std::string>& words, const std::string& where, std::map<std::string, std::string>& got) {
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    const OptionDef* def = nullptr;
    std::optional<std::string> value;
    if (w.starts_with("--")) {
      const size_t eq = w.find('=');
      const std::string name = w.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      for (const OptionDef& o : kOptions) {
        if (name == o.name) def = &o;
      }
      if (!def) {
        return Status(StatusCode::kInvalidArgument,
                      fmt::format("{} {}: not supported by gpupool sbatch (it takes {})", where, w, Supported()));
      }
      if (eq != std::string::npos) value = w.substr(eq + 1);
    } else if (w.size() >= 2 && w[0] == '-') {
      for (const OptionDef& o : kOptions) {
        if (o.letter == w[1]) def = &o;
      }
      if (!def) {
        return Status(StatusCode::kInvalidArgument,
                      fmt::format("{} {}: not supported by gpupool sbatch (it takes {})", where, w, Supported()));
      }
      if (w.size() > 2) value = w.substr(w[2] == '=' ? 3 : 2);
    } else {
      return Status(StatusCode::kInvalidArgument, fmt::format("{} '{}': expected an option such as --gres=gpu:1", where, w));
    }
    if (def->value && !value) {
      if (i + 1 >= words.size()) return Status(StatusCode::kInvalidArgument, fmt::format("{} --{}: needs a value", where, def->name));
      value = words[++i];
    }
    got[def->name] = value.value_or("");
  }
  return Status::Ok();
}

Result<int> Count(const std::map<std::string, std::string>& o, const char* name, int lo, int hi) {
  auto it = o.find(name);
  if (it == o.end()) return 0;
  std::string_view v = it->second;
  if (std::string(name) == "nodes" && v.find('-') != std::string_view::npos) v = v.substr(0, v.find('-'));  // N-M: N
  int n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < lo || n > hi) {
    return Error(StatusCode::kInvalidArgument, fmt::format("--{}={}: expected a whole number {}..{}", name, it->second, lo, hi));
  }
  return n;
}

// "gpu:2", "gpu:h100:2", "h100:2", "2": the type (or "") and the count.
Result<std::pair<std::string, int>> GpuCount(std::string_view text, const char* option) {
  std::vector<std::string> parts;
  for (std::string_view rest = text;;) {
    const size_t c = rest.find(':');
    parts.emplace_back(rest.substr(0, c));
    if (c == std::string_view::npos) break;
    rest = rest.substr(c + 1);
  }
  if (!parts.empty() && parts.front() == "gpu") parts.erase(parts.begin());
  else if (std::string(option) == "gres") {
    return Error(StatusCode::kInvalidArgument, fmt::format("--gres={}: gpupool gives GPUs only (gpu[:TYPE]:N)", text));
  }
  std::string type;
  if (parts.size() == 2) type = parts[0];
  if (parts.empty() || parts.size() > 2) return Error(StatusCode::kInvalidArgument, fmt::format("--{}={}: expected [gpu:][TYPE:]N", option, text));
  int n = 0;
  const std::string& c = parts.back();
  auto [p, ec] = std::from_chars(c.data(), c.data() + c.size(), n);
  if (ec != std::errc() || p != c.data() + c.size() || n < 0) {
    return Error(StatusCode::kInvalidArgument, fmt::format("--{}={}: expected [gpu:][TYPE:]N", option, text));
  }
  return std::pair{type, n};
}

// Slurm's --mem: a number with K, M (the default), G or T -> "NMiB".
Result<std::string> Memory(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  int64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + digits, n);
  const std::string unit(text.substr(digits));
  int64_t mib = -1;
  if (ec == std::errc() && digits > 0) {
    if (unit.empty() || unit == "M" || unit == "MB") mib = n;
    else if (unit == "K" || unit == "KB") mib = (n + 1023) / 1024;
    else if (unit == "G" || unit == "GB") mib = n * 1024;
    else if (unit == "T" || unit == "TB") mib = n * 1024 * 1024;
  }
  if (mib < 0) return Error(StatusCode::kInvalidArgument, fmt::format("--mem={}: expected a number with K, M, G or T", text));
  return fmt::format("{}MiB", mib);
}

// The model a partition or a constraint names, as the pool spells it (case aside), or "".
std::string ModelNamed(const std::vector<std::string>& models, std::string_view name) {
  for (const std::string& m : models) {
    if (m.size() == name.size() && std::equal(m.begin(), m.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        })) {
      return m;
    }
  }
  return "";
}

bool VariableName(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// The wrapper every task of the job runs: the SLURM_* variables, the srun and scontrol shims,
// the output files, then the script (on every node; its own output from node 0 only, its srun
// steps' from every node). Its arguments: the script's text, its interpreter, its arguments.
constexpr const char* kWrapper = R"SH(
script="$1"; interp="$2"; shift 2
export SLURM_JOB_ID="$GPUPOOL_JOB_ID" SLURM_JOBID="$GPUPOOL_JOB_ID"
export SLURM_NODEID="$GPUPOOL_TASK_INDEX" SLURMD_NODENAME="$GPUPOOL_NODE"
export SLURM_JOB_NODELIST="$GPUPOOL_NODES" SLURM_NODELIST="$GPUPOOL_NODES"
export SLURM_PROCID=$((SLURM_NODEID * SLURM_NTASKS_PER_NODE)) SLURM_LOCALID=0
gpus="$GPUPOOL_GPUS"; n=0
while [ -n "$gpus" ]; do n=$((n + 1)); case "$gpus" in *,*) gpus="${gpus#*,}";; *) gpus="";; esac; done
export SLURM_GPUS_ON_NODE=$n
expand() {
  p=$(printf '%s' "$1" | sed -e 's/%%/\x01/g' -e "s/%A/${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}/g" -e "s/%a/${SLURM_ARRAY_TASK_ID:-4294967294}/g" \
        -e "s/%j/$SLURM_JOB_ID/g" -e "s|%x|$SLURM_JOB_NAME|g" -e "s/%N/$GPUPOOL_NODE/g" -e "s/%n/$SLURM_NODEID/g" -e 's/\x01/%/g')
  case "$p" in /*) printf '%s' "$p";; *) printf '%s/%s' "$SLURM_SUBMIT_DIR" "$p";; esac
}
out=$(expand "$GPUPOOL_SBATCH_OUTPUT")
err=$(expand "${GPUPOOL_SBATCH_ERROR:-$GPUPOOL_SBATCH_OUTPUT}")
bin="${TMPDIR:-/tmp}/.gpupool-slurm/bin"
mkdir -p "$bin"
cat > "$bin/srun" <<'SRUN'
#!/bin/sh
# srun, as gpupool sbatch runs it: this node's share of the step's tasks, each with its
# SLURM_PROCID and SLURM_LOCALID (block distribution), the step's output with the job's.
n=""; per_node=""; gpt="${SLURM_GPUS_PER_TASK:-}"; label=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--ntasks) n="$2"; shift 2;;
    --ntasks=*) n="${1#*=}"; shift;;
    -n*) n="${1#-n}"; shift;;
    --ntasks-per-node) per_node="$2"; shift 2;;
    --ntasks-per-node=*) per_node="${1#*=}"; shift;;
    --gpus-per-task) gpt="$2"; shift 2;;
    --gpus-per-task=*) gpt="${1#*=}"; shift;;
    -N|--nodes|-c|--cpus-per-task|--mpi|--cpu-bind|--export|-J|--job-name) shift 2;;
    --nodes=*|-N*|--cpus-per-task=*|-c*|--mpi=*|--cpu-bind=*|--export=*|--job-name=*|-u|--unbuffered|--kill-on-bad-exit*) shift;;
    -l|--label) label=1; shift;;
    --) shift; break;;
    -*) echo "srun (gpupool sbatch): option $1 is not supported" >&2; exit 2;;
    *) break;;
  esac
done
nnodes=${SLURM_NNODES:-1}
if [ -n "$per_node" ]; then local_n=$per_node
elif [ -n "$n" ]; then local_n=$(( (n + nnodes - 1) / nnodes ))
else local_n=${SLURM_NTASKS_PER_NODE:-1}; fi
total=${n:-$((local_n * nnodes))}
pids=""; i=0
while [ $i -lt $local_n ]; do
  procid=$((SLURM_NODEID * local_n + i))
  [ $procid -ge $total ] && break
  (
    export SLURM_PROCID=$procid SLURM_LOCALID=$i SLURM_NTASKS=$total SLURM_NPROCS=$total SLURM_STEP_NUM_TASKS=$total
    if [ -n "$gpt" ]; then
      export CUDA_VISIBLE_DEVICES=$(printf '%s' "$GPUPOOL_GPUS" | tr ',' '\n' | sed -n "$((i * gpt + 1)),$(((i + 1) * gpt))p" | paste -sd, -)
    fi
    if [ "$SLURM_NODEID" != 0 ] && [ -n "$GPUPOOL_SBATCH_OUT" ]; then exec >>"$GPUPOOL_SBATCH_OUT" 2>>"$GPUPOOL_SBATCH_ERR"; fi
    if [ $label = 1 ]; then "$@" 2>&1 | sed "s/^/$procid: /"; exit $?; fi
    exec "$@"
  ) &
  pids="$pids $!"
  i=$((i + 1))
done
rc=0
for p in $pids; do wait "$p" || rc=$?; done
exit $rc
SRUN
cat > "$bin/scontrol" <<'SCONTROL'
#!/bin/sh
if [ "$1" = show ] && [ "$2" = hostnames ]; then printf '%s\n' "${3:-$SLURM_JOB_NODELIST}" | tr ',' '\n'; exit 0; fi
echo "scontrol (gpupool sbatch): only 'scontrol show hostnames' is taken" >&2; exit 2
SCONTROL
chmod +x "$bin/srun" "$bin/scontrol"
export PATH="$bin:$PATH" GPUPOOL_SBATCH_OUT="$out" GPUPOOL_SBATCH_ERR="$err"
printf '%s' "$script" > "$bin/../batch-script"
cd "${GPUPOOL_SBATCH_CHDIR:-$SLURM_SUBMIT_DIR}" 2>/dev/null || echo "gpupool sbatch: cannot enter ${GPUPOOL_SBATCH_CHDIR:-$SLURM_SUBMIT_DIR}; running in $(pwd)" >&2
# Appended to, never truncated (Slurm's --open-mode=append): the steps of the other nodes may
# write there before this node's script starts.
if [ "$SLURM_NODEID" = 0 ]; then
  exec "$interp" "$bin/../batch-script" "$@" >>"$out" 2>>"$err"
fi
exec "$interp" "$bin/../batch-script" "$@"
)SH";

}  // namespace

Result<json> SbatchRequest(const SbatchInput& in) {
  std::map<std::string, std::string> o;
  // #SBATCH lines: from the top, until the first line that is neither blank nor a comment.
  std::istringstream lines(in.script_text);
  std::string line;
  std::string interp = "/bin/sh";
  for (int n = 1; std::getline(lines, line); ++n) {
    if (n == 1 && line.starts_with("#!")) {
      std::string shebang = line.substr(2);
      while (!shebang.empty() && shebang.front() == ' ') shebang.erase(0, 1);
      interp = shebang.substr(0, shebang.find(' '));
      if (interp == "/usr/bin/env") {
        const std::string rest = shebang.substr(shebang.find(' ') + 1);
        interp = rest.substr(0, rest.find(' '));
      }
      continue;
    }
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    if (line[first] != '#') break;
    if (line.compare(first, 7, "#SBATCH") != 0) continue;
    const std::string where = fmt::format("{}:{}: #SBATCH", in.script_path, n);
    if (Status s = ParseOptions(Words(std::string_view(line).substr(first + 7)), where, o); !s.ok()) return tl::unexpected(s);
  }
  // The command line's options, over the script's.
  if (Status s = ParseOptions(in.options, "sbatch", o); !s.ok()) return tl::unexpected(s);

  auto nodes = Count(o, "nodes", 1, 4096);
  auto ntasks = Count(o, "ntasks", 1, 1 << 20);
  auto per_node = Count(o, "ntasks-per-node", 1, 1024);
  auto cpus = Count(o, "cpus-per-task", 1, 4096);
  for (const auto* r : {&nodes, &ntasks, &per_node, &cpus}) {
    if (!*r) return tl::unexpected(r->error());
  }
  const int n_nodes = *nodes > 0 ? *nodes : 1;
  int tasks_per_node = *per_node > 0 ? *per_node : (*ntasks > 0 ? (*ntasks + n_nodes - 1) / n_nodes : 1);
  const int n_tasks = *ntasks > 0 ? *ntasks : tasks_per_node * n_nodes;
  // GPUs per node, however the script asked.
  int gpus_per_node = 0;
  std::string model;
  if (o.count("gres")) {
    auto g = GpuCount(o["gres"], "gres");
    if (!g) return tl::unexpected(g.error());
    model = g->first;
    gpus_per_node = g->second;
  }
  if (o.count("gpus-per-node")) {
    auto g = GpuCount(o["gpus-per-node"], "gpus-per-node");
    if (!g) return tl::unexpected(g.error());
    if (!g->first.empty()) model = g->first;
    gpus_per_node = g->second;
  }
  if (o.count("gpus")) {
    auto g = GpuCount(o["gpus"], "gpus");
    if (!g) return tl::unexpected(g.error());
    if (!g->first.empty()) model = g->first;
    if (g->second % n_nodes != 0) {
      return Error(StatusCode::kInvalidArgument, fmt::format("--gpus={}: not a whole number of GPUs on each of {} nodes", o["gpus"], n_nodes));
    }
    gpus_per_node = g->second / n_nodes;
  }
  if (o.count("gpus-per-task")) {
    auto g = GpuCount(o["gpus-per-task"], "gpus-per-task");
    if (!g) return tl::unexpected(g.error());
    if (!g->first.empty()) model = g->first;
    gpus_per_node = g->second * tasks_per_node;
  }
  std::vector<std::string> models;
  if (!model.empty()) {
    const std::string m = ModelNamed(in.gpu_models, model);
    models.push_back(m.empty() ? model : m);
  }
  if (o.count("constraint")) {
    // "H100", "H100|A100", "[H100|A100]": GPU models (node labels are not matched yet).
    std::string c = o["constraint"];
    std::erase_if(c, [](char ch) { return ch == '[' || ch == ']'; });
    models.clear();
    for (std::string_view rest = c; !rest.empty();) {
      const size_t bar = rest.find_first_of("|,&");
      const std::string name(rest.substr(0, bar));
      const std::string m = ModelNamed(in.gpu_models, name);
      if (m.empty()) {
        return Error(StatusCode::kInvalidArgument,
                     fmt::format("--constraint={}: '{}' is no GPU model of this pool (node features are not matched yet)", o["constraint"], name));
      }
      models.push_back(m);
      rest = bar == std::string_view::npos ? std::string_view() : rest.substr(bar + 1);
    }
  }
  if (o.count("partition") && models.empty()) {
    // A partition named after a GPU model selects it; any other name is only SLURM_JOB_PARTITION.
    const std::string m = ModelNamed(in.gpu_models, o["partition"]);
    if (!m.empty()) models.push_back(m);
  }
  if (o.count("exclusive")) {
    if (in.node_gpus <= 0) return Error(StatusCode::kInvalidArgument, "--exclusive: the pool has no node with GPUs to give whole");
    gpus_per_node = in.node_gpus;
  }
  if (gpus_per_node > 16) return Error(StatusCode::kInvalidArgument, fmt::format("{} GPUs on a node: at most 16", gpus_per_node));

  const std::string name = o.count("job-name") ? o["job-name"] : in.script_path.substr(in.script_path.rfind('/') + 1);
  json env = json::object();
  // --export: ALL (Slurm's default) passes the submitter's environment (not its gpupool token,
  // nor what is the task's own: HOME, TMPDIR, USER...), NONE nothing, a list those named.
  const std::string exp = o.count("export") ? o["export"] : "ALL";
  static const std::set<std::string> kOwn = {"HOME", "TMPDIR", "USER", "LOGNAME", "PWD", "OLDPWD", "SHLVL", "_", "SHELL", "MAIL", "TERM"};
  std::vector<std::string> items;
  for (std::string_view rest = exp; !rest.empty();) {
    const size_t c = rest.find(',');
    items.emplace_back(rest.substr(0, c));
    rest = c == std::string_view::npos ? std::string_view() : rest.substr(c + 1);
  }
  for (const std::string& item : items) {
    if (item == "ALL") {
      for (const auto& [k, v] : in.environment) {
        if (!VariableName(k) || kOwn.count(k) || k.starts_with("GPUPOOL_") || k.starts_with("SLURM_") || v.size() > 8192) continue;
        env[k] = v;
      }
    } else if (item == "NONE" || item == "NIL") {
    } else if (const size_t eq = item.find('='); eq != std::string::npos) {
      if (!VariableName(item.substr(0, eq))) return Error(StatusCode::kInvalidArgument, fmt::format("--export: '{}' is no variable", item));
      env[item.substr(0, eq)] = item.substr(eq + 1);
    } else {
      if (!VariableName(item)) return Error(StatusCode::kInvalidArgument, fmt::format("--export: '{}' is no variable", item));
      if (auto it = in.environment.find(item); it != in.environment.end()) env[item] = it->second;
    }
  }
  const bool array = o.count("array") > 0;
  env["SLURM_SUBMIT_DIR"] = in.submit_dir;
  env["SLURM_SUBMIT_HOST"] = in.submit_host;
  env["SLURM_JOB_NAME"] = name;
  env["SLURM_NNODES"] = std::to_string(n_nodes);
  env["SLURM_JOB_NUM_NODES"] = std::to_string(n_nodes);
  env["SLURM_NTASKS"] = std::to_string(n_tasks);
  env["SLURM_NPROCS"] = std::to_string(n_tasks);
  env["SLURM_NTASKS_PER_NODE"] = std::to_string(tasks_per_node);
  if (*cpus > 0) env["SLURM_CPUS_PER_TASK"] = std::to_string(*cpus);
  if (o.count("gpus-per-task")) env["SLURM_GPUS_PER_TASK"] = std::to_string(gpus_per_node / std::max(1, tasks_per_node));
  if (o.count("partition")) env["SLURM_JOB_PARTITION"] = o["partition"];
  if (o.count("account")) env["SLURM_JOB_ACCOUNT"] = o["account"];
  if (o.count("qos")) env["SLURM_JOB_QOS"] = o["qos"];
  env["GPUPOOL_SBATCH_OUTPUT"] = o.count("output") ? o["output"] : (array ? "slurm-%A_%a.out" : "slurm-%j.out");
  if (o.count("error")) env["GPUPOOL_SBATCH_ERROR"] = o["error"];
  if (o.count("chdir")) {
    const std::string d = o["chdir"];
    env["GPUPOOL_SBATCH_CHDIR"] = d.starts_with("/") ? d : in.submit_dir + "/" + d;
  }

  json cmd = json::array({"/bin/sh", "-c", kWrapper, "gpupool-sbatch", in.script_text, interp});
  for (const std::string& a : in.script_args) cmd.push_back(a);
  json req{{"command", cmd}, {"name", name}, {"tasks", n_nodes}, {"gpus", gpus_per_node}, {"env", env}};
  if (!models.empty()) req["gpu_model"] = models;
  if (*cpus > 0) req["cpu"] = *cpus * tasks_per_node;
  if (o.count("mem")) {
    auto m = Memory(o["mem"]);
    if (!m) return tl::unexpected(m.error());
    req["memory"] = *m;
  }
  if (o.count("time")) req["time"] = o["time"];
  if (array) req["array"] = o["array"];
  if (o.count("dependency")) req["dependency"] = o["dependency"];
  if (o.count("account")) req["tenant"] = o["account"];
  if (o.count("qos")) req["priority"] = o["qos"];
  return req;
}

}  // namespace gp
