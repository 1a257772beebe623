// The user verbs: submit, jobs, job, logs, cancel, nodes, node, drain, undrain, wait, explain.
// The server address and token come from --server/--token, then GPUPOOL_ADDR/GPUPOOL_TOKEN,
// then ~/.config/gpupool/config ("server = HOST:PORT" or "https://HOST:PORT", "token = ..." or
// "token_file = PATH", "ca = PATH" for https).
// Exit codes: 0 done; 1 the server said no or could not be reached; 2 usage; `wait` exits with
// the job's own exit code.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <toml++/toml.h>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "adapters/http.h"
#include "adapters/tokens.h"
#include "apps/gpupool/commands.h"
#include "apps/gpupool/sbatch.h"
#include "core/units.h"

namespace gp::app {
namespace {

// Text from the server as a table cell: control characters (a terminal's escape sequences, a
// NUL) shown as \xNN, never sent to the terminal as they are.
std::string ShownText(std::string_view text) {
  std::string out;
  for (unsigned char ch : text) {
    if (ch < 0x20 || ch == 0x7f) out += fmt::format("\\x{:02x}", ch);
    else out += static_cast<char>(ch);
  }
  return out;
}
std::string Shown(const nlohmann::json& v) { return ShownText(v.is_string() ? v.get<std::string>() : v.dump()); }


using nlohmann::json;

struct Conn {
  std::string server;
  std::string token;
  std::string ca;  // the pool's CA (PEM file), for https://
  bool json_out = false;
};

std::string ConfigValue(const std::string& key) {
  const char* home = std::getenv("HOME");
  if (!home) return {};
  std::ifstream in(std::string(home) + "/.config/gpupool/config");
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      while (!s.empty() && (s.front() == ' ' || s.front() == '"')) s.erase(0, 1);
      while (!s.empty() && (s.back() == ' ' || s.back() == '"' || s.back() == '\r')) s.pop_back();
      return s;
    };
    if (trim(line.substr(0, eq)) == key) return trim(line.substr(eq + 1));
  }
  return {};
}

Result<HttpClient> Connect(const Conn& c) {
  std::string server = c.server;
  if (server.empty()) server = std::getenv("GPUPOOL_ADDR") ? std::getenv("GPUPOOL_ADDR") : "";
  if (server.empty()) server = ConfigValue("server");
  if (server.empty()) server = "127.0.0.1:7070";
  std::string token = c.token;
  if (token.empty()) token = std::getenv("GPUPOOL_TOKEN") ? std::getenv("GPUPOOL_TOKEN") : "";
  if (token.empty()) token = ConfigValue("token");
  if (token.empty()) {
    if (std::string file = ConfigValue("token_file"); !file.empty()) {
      auto t = ReadToken(file);
      if (!t) return tl::unexpected(t.error());
      token = *t;
    }
  }
  if (token.empty()) {
    return InvalidArgument("no token: give --token, set GPUPOOL_TOKEN, or put token_file = PATH in ~/.config/gpupool/config");
  }
  ClientTls tls;
  std::string ca = c.ca;
  if (ca.empty()) ca = std::getenv("GPUPOOL_CA") ? std::getenv("GPUPOOL_CA") : "";
  if (ca.empty()) ca = ConfigValue("ca");
  if (!ca.empty() && server.find("https://") != std::string::npos) {
    std::ifstream in(ca);
    if (!in) return InvalidArgument(fmt::format("the CA {}: cannot read it", ca));
    tls.ca_pem.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return HttpClient::Create(server, token, tls);
}

// Calls the server; on a non-2xx answer prints its message and returns nullopt.
std::optional<std::string> Call(const Conn& c, const std::string& method, const std::string& target, const std::string& body = "") {
  auto client = Connect(c);
  if (!client) {
    fmt::print(stderr, "gpupool: {}\n", client.error().message());
    return std::nullopt;
  }
  auto r = client->Call(method, target, body);
  if (!r) {
    fmt::print(stderr, "gpupool: {}\n", r.error().message());
    return std::nullopt;
  }
  if (r->status / 100 != 2) {
    const json j = json::parse(r->body, nullptr, false);
    fmt::print(stderr, "gpupool: {} (HTTP {})\n", ShownText(j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r->body),
               r->status);
    return std::nullopt;
  }
  return r->body;
}

void AddConn(CLI::App* cmd, const std::shared_ptr<Conn>& c) {
  cmd->add_option("--server", c->server, "server HOST:PORT (default: $GPUPOOL_ADDR, config, 127.0.0.1:7070)");
  cmd->add_option("--token", c->token, "bearer token (default: $GPUPOOL_TOKEN, config)");
  cmd->add_option("--ca", c->ca, "the pool's CA for an https:// server (default: $GPUPOOL_CA, config's ca = PATH)");
  cmd->add_flag("--json", c->json_out, "print JSON for scripts");
}

std::string Age(int64_t since_ms) {
  if (since_ms <= 0) return "-";
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  return FormatMillis(Millis{std::max<int64_t>(0, now - since_ms)});
}

std::string GpuList(const json& j) {
  std::string s;
  for (const json& g : j["gpus"]) s += (s.empty() ? "" : ",") + std::to_string(g.get<int>());
  return s.empty() ? "-" : s;
}

// A request body from command-line arguments, or nullopt (and why, naming the flag) when one
// of them is not UTF-8 text: JSON can carry only text, and a shell passes any bytes.
std::optional<std::string> RequestBody(const json& req, const char* verb) {
  for (const auto& [key, value] : req.items()) {
    try {
      (void)value.dump();
    } catch (const json::exception&) {
      std::string flag = key == "command" ? "the command" : "--" + key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      fmt::print(stderr, "gpupool {}: {} is not UTF-8 text\n", verb, flag);
      return std::nullopt;
    }
  }
  return req.dump();
}

struct SubmitArgs {
  int gpus = 0;
  int tasks = 1;
  std::vector<std::string> models;
  std::string priority;  // a number or a priority class's name
  std::string tenant, data, name, memory, gpu_memory, duration, time, workdir;
  double cpu = 0;
  double max_price = -1;
  int max_retries = -1;
  std::string array;
  std::vector<std::string> env;
  std::vector<std::string> secrets;
  std::string driver, image, rootfs;  // an oci job's container
  std::string dependency;             // Slurm's: afterok:ID[:ID...],afterany:ID,afternotok:ID,singleton
  bool read_only_root = false;
  std::vector<std::string> command;
};

// A secret's value as given: VALUE, or @FILE for the file's content (its last newline off).
Result<std::string> SecretValue(std::string value) {
  if (!value.starts_with("@")) return value;
  std::ifstream f(value.substr(1), std::ios::binary);
  if (!f) return InvalidArgument(fmt::format("cannot read {}", value.substr(1)));
  value.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  return value;
}

// POSTs a submission `req` for `verb` (run, submit, sbatch) and prints the answer: the JSON
// with --json, else `say` of it (the job id, by default). 2: a request that cannot be sent;
// 1: refused or unreachable.
int PostJob(const Conn& c, const json& req, const char* verb, const std::string& target = "/v1/jobs",
            const std::function<std::string(const json&)>& say = {}) {
  const auto text = RequestBody(req, verb);
  if (!text) return 2;
  auto body = Call(c, "POST", target, *text);
  if (!body) return 1;
  const json j = json::parse(*body);
  if (c.json_out) fmt::print("{}\n", *body);
  else fmt::print("{}", say ? say(j) : j["id"].get<std::string>() + "\n");
  return 0;
}

// --- job files: gpupool run job.toml ---

// A job file (TOML): the fields of POST /v1/jobs (docs/jobs.md), plus `script` (a multi-line
// shell script, run with /bin/sh, instead of `command`). The error names the file, the line
// and the field.
Result<json> ReadJobFile(const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return InvalidArgument(fmt::format("{}:{}:{}: {}", path, e.source().begin.line, e.source().begin.column, e.description()));
  }
  json req = json::object();
  auto at = [&](const toml::node& n, std::string_view key, std::string_view what) {
    return InvalidArgument(fmt::format("{}:{}: field '{}': {}", path, n.source().begin.line, key, what));
  };
  auto text_map = [&](const toml::node& n, std::string_view key, bool secrets) -> Result<json> {
    const toml::table* m = n.as_table();
    if (!m) return at(n, key, "expected a table of NAME = \"value\"");
    json out = json::object();
    for (const auto& [k, v] : *m) {
      if (!v.is_string()) return at(v, fmt::format("{}.{}", key, k.str()), "expected a string");
      std::string value = *v.value<std::string>();
      if (secrets) {
        auto opened = SecretValue(value);
        if (!opened) return at(v, fmt::format("{}.{}", key, k.str()), opened.error().message());
        value = *opened;
      }
      out[std::string(k.str())] = value;
    }
    return out;
  };
  static const std::set<std::string> kStrings = {"name", "tenant", "gpu_memory", "memory", "duration", "time", "workdir", "array",
                                                 "dependency", "driver", "image", "rootfs"};
  for (const auto& [key_view, v] : t) {
    const std::string key(key_view.str());
    if (key == "command") {
      if (v.is_string()) {
        req["command"] = *v.value<std::string>();
      } else if (const toml::array* a = v.as_array()) {
        json args = json::array();
        for (const auto& e : *a) {
          if (!e.is_string()) return at(e, key, "expected an array of strings");
          args.push_back(*e.value<std::string>());
        }
        req["command"] = args;
      } else {
        return at(v, key, "expected an array of strings, e.g. [\"python\", \"train.py\"]");
      }
    } else if (key == "script") {
      if (!v.is_string()) return at(v, key, "expected a string (a multi-line one: \"\"\"...\"\"\")");
      req["command"] = json::array({"/bin/sh", "-c", *v.value<std::string>()});
    } else if (key == "gpus" || key == "tasks" || key == "max_retries") {
      if (!v.is_integer()) return at(v, key, "expected a whole number");
      req[key] = *v.value<int64_t>();
    } else if (key == "cpu" || key == "max_price") {
      if (!v.is_number()) return at(v, key, "expected a number");
      req[key] = *v.value<double>();
    } else if (key == "priority") {
      if (v.is_integer()) req[key] = *v.value<int64_t>();
      else if (v.is_string()) req[key] = *v.value<std::string>();
      else return at(v, key, "expected a number or a priority class's name");
    } else if (key == "read_only_root") {
      if (!v.is_boolean()) return at(v, key, "expected true or false");
      req[key] = *v.value<bool>();
    } else if (key == "gpu_model") {
      if (v.is_string()) {
        req[key] = *v.value<std::string>();
      } else if (const toml::array* a = v.as_array()) {
        json models = json::array();
        for (const auto& e : *a) {
          if (!e.is_string()) return at(e, key, "expected GPU model names");
          models.push_back(*e.value<std::string>());
        }
        req[key] = models;
      } else {
        return at(v, key, "expected a model name or a list of them");
      }
    } else if (key == "env" || key == "secrets") {
      auto m = text_map(v, key, key == "secrets");
      if (!m) return tl::unexpected(m.error());
      req[key] = *m;
    } else if (key == "data") {
      const toml::table* d = v.as_table();
      if (!d || !(*d)["site"].is_string() || !(*d)["size"].is_string()) {
        return at(v, key, "expected { site = \"dc-east\", size = \"2TB\" }");
      }
      req[key] = {{"site", *(*d)["site"].value<std::string>()}, {"size", *(*d)["size"].value<std::string>()}};
    } else if (kStrings.count(key)) {
      if (!v.is_string()) return at(v, key, "expected a string");
      req[key] = *v.value<std::string>();
    } else {
      return at(v, key, "not a job field (docs/jobs.md lists them)");
    }
  }
  if (t.contains("command") && t.contains("script")) return InvalidArgument(fmt::format("{}: give `command` or `script`, not both", path));
  if (!req.contains("command")) return InvalidArgument(fmt::format("{}: field 'command' (or 'script'): required", path));
  return req;
}

int RunJobFile(const Conn& c, const std::string& path, bool dry_run) {
  auto req = ReadJobFile(path);
  if (!req) {
    fmt::print(stderr, "gpupool run: {}\n", req.error().message());
    return 2;
  }
  if (!dry_run) return PostJob(c, *req, "run");
  return PostJob(c, *req, "run", "/v1/jobs?dry_run=1", [](const json& j) { return j.value("explain", std::string()); });
}

// --- sbatch: a Slurm batch script, unchanged ---

int Sbatch(const Conn& c, const std::vector<std::string>& args, bool parsable) {
  // Slurm's options, then the script, then its arguments.
  static const std::set<std::string> kWithValue = {"-J", "-G", "-N", "-n", "-c", "-t", "-a", "-o", "-e", "-D", "-d", "-p", "-A",
                                                   "-q", "-C"};
  SbatchInput in;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!a.starts_with("-")) break;
    in.options.push_back(a);
    const bool long_without_value = a.starts_with("--") && a.find('=') == std::string::npos && a != "--exclusive";
    if ((long_without_value || kWithValue.count(a)) && i + 1 < args.size()) in.options.push_back(args[++i]);
  }
  if (i >= args.size()) {
    fmt::print(stderr, "gpupool sbatch: expected a batch script: gpupool sbatch [OPTIONS] script.sh [ARGS...]\n");
    return 2;
  }
  in.script_path = args[i];
  in.script_args.assign(args.begin() + static_cast<long>(i) + 1, args.end());
  std::ifstream f(in.script_path, std::ios::binary);
  if (!f) {
    fmt::print(stderr, "gpupool sbatch: cannot read {}\n", in.script_path);
    return 2;
  }
  in.script_text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  std::error_code ec;
  in.submit_dir = std::filesystem::current_path(ec).string();
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) in.submit_host = host;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) in.environment[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  // The pool's GPU models and its largest node (for --constraint, --partition, --exclusive).
  if (auto nodes = Call(c, "GET", "/v1/nodes")) {
    const json j = json::parse(*nodes, nullptr, false);
    if (j.is_object() && j.contains("nodes")) {
      for (const json& n : j["nodes"]) {
        const std::string model = n.value("model", "");
        if (!model.empty() && std::find(in.gpu_models.begin(), in.gpu_models.end(), model) == in.gpu_models.end()) {
          in.gpu_models.push_back(model);
        }
        if (n.contains("gpus") && n["gpus"].is_array()) in.node_gpus = std::max(in.node_gpus, static_cast<int>(n["gpus"].size()));
      }
    }
  } else {
    return 1;
  }
  auto req = SbatchRequest(in);
  if (!req) {
    fmt::print(stderr, "gpupool sbatch: {}\n", req.error().message());
    return 2;
  }
  return PostJob(c, *req, "sbatch", "/v1/jobs", [parsable](const json& j) {
    const std::string id = j["id"].get<std::string>();
    return parsable ? id + "\n" : "Submitted batch job " + id + "\n";
  });
}

int Submit(const Conn& c, const SubmitArgs& a) {
  json req{{"command", a.command}, {"gpus", a.gpus}, {"tasks", a.tasks}};
  if (!a.priority.empty()) {
    int n = 0;
    const auto r = std::from_chars(a.priority.data(), a.priority.data() + a.priority.size(), n);
    if (r.ec == std::errc() && r.ptr == a.priority.data() + a.priority.size()) {
      req["priority"] = n;
    } else {
      req["priority"] = a.priority;  // a class's name, resolved by the server
    }
  }
  if (!a.models.empty()) req["gpu_model"] = a.models;
  if (!a.tenant.empty()) req["tenant"] = a.tenant;
  if (!a.name.empty()) req["name"] = a.name;
  if (a.cpu > 0) req["cpu"] = a.cpu;
  if (!a.memory.empty()) req["memory"] = a.memory;
  if (!a.gpu_memory.empty()) req["gpu_memory"] = a.gpu_memory;
  if (!a.duration.empty()) req["duration"] = a.duration;
  if (!a.time.empty()) req["time"] = a.time;
  if (!a.workdir.empty()) req["workdir"] = a.workdir;
  // --image or --rootfs alone mean the oci driver.
  const std::string driver = !a.driver.empty() ? a.driver : (!a.image.empty() || !a.rootfs.empty() ? "oci" : "");
  if (!driver.empty()) req["driver"] = driver;
  if (!a.image.empty()) req["image"] = a.image;
  if (!a.rootfs.empty()) req["rootfs"] = a.rootfs;
  if (a.read_only_root) req["read_only_root"] = true;
  if (!a.dependency.empty()) req["dependency"] = a.dependency;
  if (a.max_price >= 0) req["max_price"] = a.max_price;
  if (a.max_retries >= 0) req["max_retries"] = a.max_retries;
  if (!a.array.empty()) req["array"] = a.array;
  if (!a.data.empty()) {
    const size_t colon = a.data.find(':');
    if (colon == std::string::npos) {
      fmt::print(stderr, "gpupool submit: --data: expected SITE:SIZE, e.g. dc-east:100GB\n");
      return 2;
    }
    req["data"] = {{"site", a.data.substr(0, colon)}, {"size", a.data.substr(colon + 1)}};
  }
  json env = json::object();
  for (const std::string& kv : a.env) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "gpupool submit: --env: expected KEY=VALUE, got '{}'\n", kv);
      return 2;
    }
    env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (!env.empty()) req["env"] = env;
  // Secrets: NAME=VALUE, or NAME=@FILE for the file's content (kept off the command line, and
  // out of the shell's history and `ps`).
  json secrets = json::object();
  for (const std::string& kv : a.secrets) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "gpupool submit: --secret: expected NAME=VALUE or NAME=@FILE, got a value without '='\n");
      return 2;
    }
    auto value = SecretValue(kv.substr(eq + 1));
    if (!value) {
      fmt::print(stderr, "gpupool submit: --secret {}: {}\n", kv.substr(0, eq), value.error().message());
      return 2;
    }
    secrets[kv.substr(0, eq)] = *value;
  }
  if (!secrets.empty()) req["secrets"] = secrets;
  return PostJob(c, req, "submit");
}

// Up to `want` entries of a paged listing (`GET PATH?QUERYlimit=N`, answered as {KEY: [...],
// "next": CURSOR}), read a page (at most 1,000) at a time with `&CURSOR_PARAM=next`.
std::optional<json> ReadPages(const Conn& c, const std::string& path_and_query, const char* key, const char* cursor_param,
                              size_t want) {
  json all = json::array();
  std::string cursor;
  while (all.size() < want) {
    const size_t page = std::min<size_t>(want - all.size(), 1000);
    auto body = Call(c, "GET", fmt::format("{}limit={}{}", path_and_query, page, cursor));
    if (!body) return std::nullopt;
    const json p = json::parse(*body, nullptr, false);
    if (!p.is_object() || !p.contains(key)) {
      fmt::print(stderr, "gpupool: the server's answer is not a list of {}\n", key);
      return std::nullopt;
    }
    for (const json& x : p[key]) all.push_back(x);
    if (!p.contains("next") || p[key].empty()) break;
    cursor = fmt::format("&{}={}", cursor_param, p["next"].get<std::string>());
  }
  return json{{key, all}};
}

int Jobs(const Conn& c, const std::string& filters, size_t want) {
  auto read = ReadPages(c, "/v1/jobs?" + filters, "jobs", "before", want);
  if (!read) return 1;
  const json& j = *read;
  if (c.json_out) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("{:<6} {:<18} {:<10} {:<16} {:<10} {:>5} {:>10}  {}\n", "ID", "NAME", "STATE", "NODE", "GPUS", "EXIT", "AGE", "MESSAGE");
  for (const json& job : j["jobs"]) {
    if (job.contains("array_counts")) {
      // An array: one line, its elements counted by state (--expand lists them).
      std::string counts;
      for (const char* st : {"queued", "starting", "running", "succeeded", "failed", "cancelled"}) {
        const int64_t n = job["array_counts"].value(st, int64_t{0});
        if (n > 0) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", n, st);
      }
      fmt::print("{:<6} {:<18} {:<10} {:<16} {:<10} {:>5} {:>10}  array {}: {}\n", Shown(job["id"]),
                 Shown(job["name"]).substr(0, 18), Shown(job["state"]), "-", "-",
                 job["exit_code"].is_null() ? "-" : std::to_string(job["exit_code"].get<int>()), Age(job["submit_ms"].get<int64_t>()),
                 Shown(job["array"]), counts);
      continue;
    }
    const std::string shown_id =
        job.contains("array_job") ? fmt::format("{}_{}", Shown(job["array_job"]), job["array_index"].get<int64_t>()) : Shown(job["id"]);
    fmt::print("{:<6} {:<18} {:<10} {:<16} {:<10} {:>5} {:>10}  {}\n", shown_id,
               Shown(job["name"]).substr(0, 18), Shown(job["state"]),
               job["node"].is_null() ? "-" : Shown(job["node"]), GpuList(job),
               job["exit_code"].is_null() ? "-" : std::to_string(job["exit_code"].get<int>()), Age(job["submit_ms"].get<int64_t>()),
               Shown(job["message"]));
  }
  return 0;
}

int ShowJob(const Conn& c, const std::string& id) {
  auto body = Call(c, "GET", "/v1/jobs/" + id);
  if (!body) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *body);
    return 0;
  }
  const json j = json::parse(*body);
  fmt::print("job {} ({})\n  state      {}\n  command    {}\n  node       {}\n  gpus       {}\n  exit code  {}\n", Shown(j["id"]),
             Shown(j["name"]), Shown(j["state"]), ShownText(fmt::format("{}", fmt::join(j["command"].get<std::vector<std::string>>(), " "))),
             j["node"].is_null() ? "-" : Shown(j["node"]), GpuList(j),
             j["exit_code"].is_null() ? "-" : std::to_string(j["exit_code"].get<int>()));
  if (!j["message"].get<std::string>().empty()) fmt::print("  message    {}\n", Shown(j["message"]));
  for (size_t t = 0; t < j["placement"].size(); ++t) {
    fmt::print("  task {}     {} GPU mask 0x{:x}\n", t, Shown(j["placement"][t]["node"]), j["placement"][t]["gpu_mask"].get<int>());
  }
  if (j.contains("attempts") && !j["attempts"].empty()) {
    fmt::print("  attempt    {} (earlier ones below)\n", j["attempt"].get<int>());
    for (const json& a : j["attempts"]) {
      fmt::print("    #{} on {}: {}\n", a["attempt"].get<int>(), fmt::join(a["nodes"].get<std::vector<std::string>>(), ","),
                 a["outcome"].get<std::string>());
    }
  }
  return 0;
}

bool Terminal(const std::string& state) { return state == "succeeded" || state == "failed" || state == "cancelled"; }

int Logs(const Conn& c, const std::string& id, int task, bool err, bool follow) {
  size_t offset = 0;
  while (true) {
    auto body = Call(c, "GET", fmt::format("/v1/jobs/{}/logs?task={}&stream={}&offset={}", id, task, err ? "stderr" : "stdout", offset));
    if (!body) return 1;
    fmt::print("{}", *body);
    std::fflush(stdout);
    offset += body->size();
    if (!body->empty()) continue;  // the server answers a big log a page (1 MiB) at a time
    if (!follow) return 0;
    auto job = Call(c, "GET", "/v1/jobs/" + id);
    if (!job) return 1;
    if (Terminal(json::parse(*job)["state"].get<std::string>()) && body->empty()) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

int Wait(const Conn& c, const std::string& id, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    auto body = Call(c, "GET", "/v1/jobs/" + id);
    if (!body) return 1;
    const json j = json::parse(*body);
    const std::string state = j["state"].get<std::string>();
    if (Terminal(state)) {
      if (c.json_out) fmt::print("{}\n", *body);
      else fmt::print("job {} {}{}\n", id, state, j["exit_code"].is_null() ? "" : fmt::format(" (exit code {})", j["exit_code"].get<int>()));
      if (state == "cancelled") return 130;
      return j["exit_code"].is_null() ? 1 : std::clamp(j["exit_code"].get<int>(), 0, 255);
    }
    if (timeout_s > 0 && std::chrono::steady_clock::now() > deadline) {
      fmt::print(stderr, "gpupool wait: job {} still {} after {}s\n", id, state, timeout_s);
      return 124;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int Nodes(const Conn& c) {
  auto read = ReadPages(c, "/v1/nodes?", "nodes", "after", SIZE_MAX);  // every node
  if (!read) return 1;
  const json& j = *read;
  if (c.json_out) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("{:<18} {:<9} {:<8} {:>4} {:>4} {:>6} {:>8} {:>6} {:<12} {:<10} {:>7}\n", "NAME", "STATE", "MODEL", "GPUS", "FREE", "CPUS",
             "MEM GiB", "GPU%", "SITE", "PROVIDER", "$/GPU-h");
  for (const json& n : j["nodes"]) {
    int64_t util = 0;
    for (const json& g : n["gpus"]) util += g.contains("load") ? g["load"]["utilisation"].get<int64_t>() : 0;
    const size_t count = n["gpus"].size();
    fmt::print("{:<18} {:<9} {:<8} {:>4} {:>4} {:>6} {:>8} {:>5}% {:<12} {:<10} {:>7.2f}\n", Shown(n["name"]),
               Shown(n["state"]), Shown(n["model"]), count, n["free_gpus"].get<int>(), n["cpu_cores"].get<int>(),
               n["memory_mib"].get<int64_t>() / 1024, count ? util / static_cast<int64_t>(count) / 10 : 0, Shown(n["site"]),
               Shown(n["provider"]), n["price_per_gpu_hour"].get<double>());
  }
  return 0;
}

// `gpupool offers`: what the pool can acquire, at what price, what it holds of each, and the
// scopes blocked after a provider's refusal.
int Offers(const Conn& c) {
  auto body = Call(c, "GET", "/v1/offers");
  if (!body) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *body);
    return 0;
  }
  const json j = json::parse(*body);
  fmt::print("{:<34} {:<10} {:<12} {:<8} {:>4} {:<10} {:>8} {:>7} {:>7} {:>7} {:>9}\n", "OFFER", "PROVIDER", "SITE", "MODEL", "GPUS",
             "TIER", "$/HOUR", "$/GPU-h", "RUNNING", "BOOTING", "AVAILABLE");
  for (const json& o : j["offers"]) {
    fmt::print("{:<34} {:<10} {:<12} {:<8} {:>4} {:<10} {:>8.2f} {:>7.2f} {:>7} {:>7} {:>9}\n", Shown(o["name"]), Shown(o["provider"]),
               Shown(o["site"]), Shown(o["gpu_model"]), o["gpus"].get<int>(), Shown(o["tier"]), o["price_per_hour"].get<double>(),
               o["price_per_gpu_hour"].get<double>(), o["running"].get<int>(), o["booting"].get<int>(),
               o["available"].get<bool>() ? "yes" : "no");
  }
  for (const json& b : j["blocked"]) {
    fmt::print("blocked: {} {} for {:.0f} s more\n", Shown(b["scope"]), Shown(b["what"]), b["seconds_left"].get<double>());
  }
  return 0;
}

// `gpupool tenant ...` and `gpupool token ...`: teams sharing the pool and their tokens.
int TenantList(const Conn& c) {
  auto body = Call(c, "GET", "/v1/tenants");
  if (!body) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *body);
    return 0;
  }
  const json j = json::parse(*body);
  // One line per tenant and GPU model: quota, used, borrowed, lent (GPUs), then the tenant's
  // weight, decayed usage, fair-share rank, running and queued jobs.
  fmt::print("{:<20} {:<12} {:>6} {:>8} {:>6} {:>8} {:>6} {:<14} {:>6} {:>10} {:>4} {:>7} {:>6}\n", "TENANT", "COHORT", "MODEL",
             "QUOTA", "USED", "BORROWED", "LENT", "LIMITS", "WEIGHT", "DECAYED-H", "RANK", "RUNNING", "QUEUED");
  for (const json& t : j["tenants"]) {
    const json share = t.value("share", json::object());
    std::vector<json> models;
    for (const json& m : share.value("models", json::array())) models.push_back(m);
    if (models.empty()) models.push_back(json{{"model", "-"}});
    for (size_t i = 0; i < models.size(); ++i) {
      const json& m = models[i];
      auto n = [&](const char* k) { return m.contains(k) ? fmt::format("{:g}", m[k].get<double>()) : std::string("-"); };
      std::string limits;
      if (m.contains("borrow_limit")) limits += "borrow " + n("borrow_limit");
      if (m.contains("lend_limit")) limits += (limits.empty() ? "" : ",") + std::string("lend ") + n("lend_limit");
      const bool first = i == 0;
      fmt::print("{:<20} {:<12} {:>6} {:>8} {:>6} {:>8} {:>6} {:<14} {:>6} {:>10} {:>4} {:>7} {:>6}\n", first ? Shown(t["name"]) : "",
                 first ? (Shown(t["cohort"]).empty() ? "-" : Shown(t["cohort"])) : "", ShownText(m.value("model", "-")),
                 n("quota"), n("used"), n("borrowed"), n("lent"), limits.empty() ? "-" : limits,
                 first ? std::to_string(t["weight"].get<int>()) : "",
                 first ? fmt::format("{:.2f}", share.value("decayed_gpu_hours", 0.0)) : "",
                 first && share.contains("rank") ? std::to_string(share["rank"].get<int>()) : "",
                 first ? std::to_string(t.value("running", 0)) : "", first ? std::to_string(t.value("queued", 0)) : "");
    }
  }
  return 0;
}

// "H100=64,A100=32" into {"H100": 64, "A100": 32}; nullopt (having said why) when malformed.
std::optional<json> PerModel(const std::string& flag, const std::string& text) {
  json q = json::object();
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    const size_t eq = part.find('=');
    int64_t gpus = 0;
    const auto parsed = eq == std::string::npos ? std::from_chars_result{part.data(), std::errc::invalid_argument}
                                                : std::from_chars(part.data() + eq + 1, part.data() + part.size(), gpus);
    if (eq == std::string::npos || eq == 0 || parsed.ec != std::errc() || parsed.ptr != part.data() + part.size()) {
      fmt::print(stderr, "gpupool: {}: '{}': expected MODEL=GPUS, e.g. H100=64,A100=32\n", flag, part);
      return std::nullopt;
    }
    q[part.substr(0, eq)] = gpus;
    start = comma + 1;
  }
  return q;
}

struct TenantFields {
  std::string name, cohort, quota, borrow_limit, lend_limit, order, default_time, max_time, priority, unix_user;
  int weight = 0;  // 0: not given
};

// `tenant create` (POST) and `tenant set` (PATCH: only the fields given change).
int TenantWrite(const Conn& c, const TenantFields& f, bool create) {
  json body = json::object();
  if (create) body["name"] = f.name;
  if (f.weight != 0) body["weight"] = f.weight;
  if (!f.cohort.empty()) body["cohort"] = f.cohort == "none" ? "" : f.cohort;
  if (!f.order.empty()) body["order"] = f.order;
  if (!f.default_time.empty()) body["default_time"] = f.default_time;
  if (!f.max_time.empty()) body["max_time"] = f.max_time;
  if (!f.priority.empty()) body["priority"] = f.priority == "none" ? "" : f.priority;
  if (!f.unix_user.empty()) body["unix_user"] = f.unix_user == "none" ? "" : f.unix_user;
  for (const auto& [flag, key, text] : {std::tuple{"--quota", "quota", &f.quota}, std::tuple{"--borrow-limit", "borrow_limit", &f.borrow_limit},
                                        std::tuple{"--lend-limit", "lend_limit", &f.lend_limit}}) {
    if (text->empty()) continue;
    auto q = PerModel(flag, *text == "none" ? std::string() : *text);
    if (*text == "none") q = json::object();
    if (!q) return 2;
    body[key] = *q;
  }
  auto r = create ? Call(c, "POST", "/v1/tenants", body.dump()) : Call(c, "PATCH", "/v1/tenants/" + f.name, body.dump());
  if (!r) return 1;
  fmt::print("{}\n", c.json_out ? *r : "tenant " + f.name + (create ? " created" : " updated"));
  return 0;
}

int TokenCreate(const Conn& c, const std::string& tenant, const std::string& role, const std::string& name, const std::string& ttl) {
  json body{{"tenant", tenant}, {"role", role}};
  if (!name.empty()) body["name"] = name;
  if (!ttl.empty()) body["ttl"] = ttl;
  auto r = Call(c, "POST", "/v1/tokens", body.dump());
  if (!r) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *r);
    return 0;
  }
  const json j = json::parse(*r);
  // The secret alone on stdout (for $(...)); what it is on stderr.
  fmt::print(stderr, "token {} for tenant {} ({}){}: shown this once\n", Shown(j["id"]), Shown(j["tenant"]), Shown(j["role"]),
             j["expires_ms"].get<int64_t>() > 0 ? ", expires in " + ttl : "");
  fmt::print("{}\n", Shown(j["token"]));
  return 0;
}

int TokenList(const Conn& c) {
  auto body = Call(c, "GET", "/v1/tokens");
  if (!body) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *body);
    return 0;
  }
  const json j = json::parse(*body);
  fmt::print("{:<18} {:<20} {:<16} {:<7} {}\n", "ID", "TENANT", "NAME", "ROLE", "STATE");
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const json& t : j["tokens"]) {
    const int64_t exp = t["expires_ms"].get<int64_t>();
    const std::string state = t["revoked"].get<bool>() ? "revoked" : exp > 0 && exp <= now ? "expired" : "active";
    fmt::print("{:<18} {:<20} {:<16} {:<7} {}\n", Shown(t["id"]), Shown(t["tenant"]), Shown(t["name"]).empty() ? "-" : Shown(t["name"]),
               Shown(t["role"]), state);
  }
  return 0;
}

// `gpupool usage [--by COLUMNS] [--since DURATION]`: GPU-hours and dollars, grouped.
int Usage(const Conn& c, const std::string& by, const std::string& since) {
  auto body = Call(c, "GET", fmt::format("/v1/usage?by={}&since={}", by, since));
  if (!body) return 1;
  if (c.json_out) {
    fmt::print("{}\n", *body);
    return 0;
  }
  const json j = json::parse(*body);
  std::string head;
  for (const json& col : j["by"]) {
    std::string name = Shown(col);
    for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    head += fmt::format("{:<24} ", name);
  }
  fmt::print("{}{:>12} {:>12} {:>8}\n", head, "GPU-HOURS", "DOLLARS", "RECORDS");
  for (const json& row : j["rows"]) {
    std::string line;
    for (const json& col : j["by"]) {
      const std::string v = Shown(row[col.get<std::string>()]);
      line += fmt::format("{:<24} ", v.empty() ? "-" : v);
    }
    fmt::print("{}{:>12.2f} {:>12.2f} {:>8}\n", line, row["gpu_hours"].get<double>(), row["usd"].get<double>(), row["records"].get<int64_t>());
  }
  const json& t = j["total"];
  fmt::print("{:<{}}{:>12.2f} {:>12.2f} {:>8}\n", "total", std::max<size_t>(head.size(), 1), t["gpu_hours"].get<double>(), t["usd"].get<double>(),
             t["records"].get<int64_t>());
  return 0;
}

// Whether an event's actor (who made the change, docs/api.md) is `who`: a token's name or
// id, a tenant, or "admin".
bool ActedBy(const json& e, const std::string& who) {
  if (!e.contains("data") || !e["data"].is_object() || !e["data"].contains("actor") || !e["data"]["actor"].is_object()) return false;
  const json& a = e["data"]["actor"];
  for (const char* key : {"name", "token", "tenant", "kind"}) {
    if (a.contains(key) && a[key].is_string() && a[key].get<std::string>() == who) return true;
  }
  return false;
}

// `gpupool events [-f] [--since N] [--actor WHO]`: the event log; -f follows it, resuming from
// the last event seen across server restarts (the log is durable, so nothing is missed).
int EventsCmd(const Conn& c, uint64_t since, bool follow, const std::string& actor) {
  int failures = 0;
  for (;;) {
    const std::string target = fmt::format("/v1/events?since={}&limit=1000{}", since, follow ? "&wait=25s" : "");
    std::optional<std::string> body;
    if (auto client = Connect(c)) {
      auto r = client->Call("GET", target, "", Millis{35'000});
      const json j = r ? json::parse(r->body, nullptr, false) : json();
      const std::string why = !r ? r.error().message()
                                 : fmt::format("{} (HTTP {})", j.is_object() ? j.value("error", r->body) : r->body, r->status);
      if (r && r->status == 200) {
        body = std::move(r->body);
      } else if (r && (r->status == 410 || r->status == 400 || r->status == 401)) {
        fmt::print(stderr, "gpupool: {}\n", why);  // pruned, malformed, refused: retrying will not help
        return 1;
      } else {
        fmt::print(stderr, "gpupool: {}\n", why);
      }
    } else {
      fmt::print(stderr, "gpupool: {}\n", client.error().message());
    }
    if (!body) {
      if (!follow || ++failures > 120) return 1;
      std::this_thread::sleep_for(std::chrono::seconds(1));  // the server restarts: keep trying
      continue;
    }
    failures = 0;
    size_t n = 0;
    std::istringstream lines(*body);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      ++n;
      const json e = json::parse(line, nullptr, false);
      if (!e.is_object()) continue;
      since = std::max<uint64_t>(since, e.value("sequence", uint64_t{0}));
      if (!actor.empty() && !ActedBy(e, actor)) continue;
      if (c.json_out) {
        fmt::print("{}\n", line);
      } else {
        std::string type = e.value("type", "");
        if (type.starts_with("io.gpupool.")) type = type.substr(11);
        fmt::print("{:>7}  {}  {:<18} {:<16} {}\n", e.value("sequence", uint64_t{0}), ShownText(e.value("time", "")), ShownText(type),
                   ShownText(e.value("subject", "")), e.contains("data") ? e["data"].dump(-1, ' ', true, json::error_handler_t::replace) : "{}");
      }
    }
    std::fflush(stdout);
    if (!follow && n < 1000) return 0;
  }
}

int Simple(const Conn& c, const std::string& method, const std::string& target, const std::string& done) {
  auto body = Call(c, method, target);
  if (!body) return 1;
  if (c.json_out) fmt::print("{}\n", *body);
  else if (!done.empty()) fmt::print("{}\n", done);
  else fmt::print("{}\n", json::parse(*body).dump(2));
  return 0;
}

}  // namespace

std::vector<std::string>& TrailingCommand() {
  static std::vector<std::string> words;
  return words;
}

void AddClientCommands(CLI::App& app, int* exit_code) {
  auto conn = std::make_shared<Conn>();
  auto parsable = std::make_shared<bool>(false);
  CLI::App* sbatch = app.add_subcommand(
      "sbatch", "Run a Slurm batch script unchanged: its #SBATCH lines (and Slurm's options here, which override them) make "
                "the job (docs/slurm.md)");
  AddConn(sbatch, conn);
  sbatch->add_flag("--parsable", *parsable, "print the job id alone");
  sbatch->allow_extras();
  sbatch->callback([conn, sbatch, parsable, exit_code] { *exit_code = Sbatch(*conn, sbatch->remaining(), *parsable); });

  auto job_file = std::make_shared<std::string>();
  auto dry_run = std::make_shared<bool>(false);
  CLI::App* run = app.add_subcommand("run", "Submit the job a job file describes (TOML: the API's fields, docs/jobs.md)");
  AddConn(run, conn);
  run->add_option("file", *job_file, "the job file, e.g. job.toml")->required();
  run->add_flag("--dry-run", *dry_run, "show what would be submitted and where it would land now, submitting nothing");
  run->callback([conn, job_file, dry_run, exit_code] { *exit_code = RunJobFile(*conn, *job_file, *dry_run); });

  auto sa = std::make_shared<SubmitArgs>();
  CLI::App* submit = app.add_subcommand("submit", "Submit a job: gpupool submit --gpus 2 -- CMD ARGS...");
  AddConn(submit, conn);
  submit->add_option("--gpus", sa->gpus, "GPUs per task")->check(CLI::Range(0, 16));
  submit->add_option("--tasks", sa->tasks, "tasks (a gang: all start together)")->check(CLI::Range(1, 4096));
  submit->add_option("--gpu-model", sa->models, "allowed GPU model (repeatable)")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  submit->add_option("--priority", sa->priority,
                     "a number or a priority class's name (the fleet file's [[priority_class]]); higher first under the "
                     "priority order");
  submit->add_option("--tenant", sa->tenant, "tenant");
  submit->add_option("--data", sa->data, "data set as SITE:SIZE");
  submit->add_option("--name", sa->name, "job name");
  submit->add_option("--cpu", sa->cpu, "CPU cores per task");
  submit->add_option("--memory", sa->memory, "memory per task, e.g. 16GiB");
  submit->add_option("--gpu-memory", sa->gpu_memory, "minimum memory per GPU, e.g. 40GiB");
  submit->add_option("--duration", sa->duration, "estimated run time, e.g. 2h");
  submit->add_option("--time", sa->time,
                     "time limit, as Slurm's --time (30, 1:30:00, 1-12:00:00) or 2h: SIGTERM at the limit, SIGKILL after "
                     "the grace, and the job ends timed-out");
  submit->add_option("--max-price", sa->max_price, "price ceiling, USD per GPU-hour");
  submit->add_option("--env", sa->env, "KEY=VALUE for the job (repeatable)")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  submit->add_option("--secret", sa->secrets,
                     "NAME=VALUE or NAME=@FILE: in the job's environment, never shown back (sealed in the store; repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  submit->add_option("--workdir", sa->workdir, "working directory on the node");
  submit->add_option("--dependency,-d", sa->dependency,
                     "start after other jobs, as Slurm's: afterok:ID[:ID...] (they succeeded), afterany:ID (they ended), "
                     "afternotok:ID (they failed), singleton (after the earlier jobs of this name); joined by ','. One "
                     "that can no longer be met ends the job, cancelled, saying why");
  submit->add_option("--driver", sa->driver, "process (the default) or oci: a container (runc), with --image or --rootfs");
  submit->add_option("--image", sa->image, "the container's image, unpacked by the node's --oci-unpack tool (the oci driver)");
  submit->add_option("--rootfs", sa->rootfs, "the container's root file system, a directory on the node (the oci driver)");
  submit->add_flag("--read-only-root", sa->read_only_root, "mount the container's root file system read-only");
  submit->add_option("--max-retries", sa->max_retries, "placements after failures not the job's own (default: the server's)")
      ->check(CLI::Range(0, 100));
  submit->add_option("--array", sa->array,
                     "a job array, as Slurm's: 0-9999, 0-9999%64 (at most 64 at once), 1,3,10-20:5; each element gets "
                     "GPUPOOL_ARRAY_INDEX and SLURM_ARRAY_TASK_ID, and is addressed as ID_INDEX");
  submit->add_option("command", sa->command, "the command, after --");
  submit->callback([conn, sa, exit_code] {
    if (sa->command.empty()) sa->command = TrailingCommand();
    if (sa->command.empty()) {
      fmt::print(stderr, "gpupool submit: no command; put it after --, e.g. gpupool submit --gpus 1 -- nvidia-smi\n");
      *exit_code = 2;
      return;
    }
    *exit_code = Submit(*conn, *sa);
  });

  auto jq = std::make_shared<std::array<std::string, 5>>();
  CLI::App* jobs = app.add_subcommand("jobs", "List jobs, newest first");
  AddConn(jobs, conn);
  jobs->add_option("--state", (*jq)[0], "queued, starting, running, succeeded, failed or cancelled");
  jobs->add_option("--tenant", (*jq)[1], "only this tenant's");
  jobs->add_option("--node", (*jq)[2], "only jobs on this node");
  jobs->add_option("--array", (*jq)[3], "only the elements of this array");
  auto expand = std::make_shared<bool>(false);
  jobs->add_flag("--expand", *expand, "list arrays' elements one by one (else an array is one line with its counts)");
  auto limit = std::make_shared<size_t>(1000);
  jobs->add_option("--limit", *limit, "at most this many (default 1000; more are read page by page)")->check(CLI::Range(1, 100'000'000));
  jobs->callback([conn, jq, limit, expand, exit_code] {
    std::string q;
    const char* keys[] = {"state", "tenant", "node", "array"};
    for (size_t i = 0; i < 4; ++i) {
      if (!(*jq)[i].empty()) q += std::string(keys[i]) + "=" + (*jq)[i] + "&";
    }
    if (*expand) q += "expand=1&";
    *exit_code = Jobs(*conn, q, *limit);
  });

  auto id = std::make_shared<std::string>();
  CLI::App* job = app.add_subcommand("job", "Show one job");
  AddConn(job, conn);
  job->add_option("id", *id, "job id, or ARRAY_INDEX for an array element")->required();
  job->callback([conn, id, exit_code] { *exit_code = ShowJob(*conn, *id); });

  auto lo = std::make_shared<std::tuple<int, bool, bool>>(0, false, false);
  CLI::App* logs = app.add_subcommand("logs", "Print a job's output");
  AddConn(logs, conn);
  logs->add_option("id", *id, "job id")->required();
  logs->add_option("--task", std::get<0>(*lo), "task index");
  logs->add_flag("--stderr", std::get<1>(*lo), "standard error instead of standard output");
  logs->add_flag("-f,--follow", std::get<2>(*lo), "keep printing until the job ends");
  logs->callback([conn, id, lo, exit_code] { *exit_code = Logs(*conn, *id, std::get<0>(*lo), std::get<1>(*lo), std::get<2>(*lo)); });

  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job (its processes get SIGTERM, then SIGKILL)");
  AddConn(cancel, conn);
  cancel->add_option("id", *id, "job id")->required();
  cancel->callback([conn, id, exit_code] { *exit_code = Simple(*conn, "POST", "/v1/jobs/" + *id + "/cancel", "cancelling job " + *id); });

  auto timeout = std::make_shared<double>(0);
  CLI::App* wait = app.add_subcommand("wait", "Wait for a job to end; exit with its exit code");
  AddConn(wait, conn);
  wait->add_option("id", *id, "job id")->required();
  wait->add_option("--timeout", *timeout, "give up after this many seconds (exit 124)");
  wait->callback([conn, id, timeout, exit_code] { *exit_code = Wait(*conn, *id, *timeout); });

  CLI::App* explain = app.add_subcommand("explain", "Why a job waits (or where it runs)");
  AddConn(explain, conn);
  explain->add_option("id", *id, "job id")->required();
  explain->callback([conn, id, exit_code] {
    auto body = Call(*conn, "GET", "/v1/jobs/" + *id + "/explain");
    if (!body) {
      *exit_code = 1;
      return;
    }
    if (conn->json_out) fmt::print("{}\n", *body);
    else fmt::print("{}", json::parse(*body)["explain"].get<std::string>());
    *exit_code = 0;
  });

  CLI::App* nodes = app.add_subcommand("nodes", "List nodes with their GPUs and live load");
  AddConn(nodes, conn);
  nodes->callback([conn, exit_code] { *exit_code = Nodes(*conn); });

  CLI::App* tenant = app.add_subcommand("tenant", "Teams sharing the pool: create, list, delete (admin)");
  tenant->require_subcommand(1);
  auto ta = std::make_shared<TenantFields>();
  auto tenant_flags = [&](CLI::App* cmd) {
    AddConn(cmd, conn);
    cmd->add_option("name", ta->name, "its name: a-z, 0-9 and -")->required();
    cmd->add_option("--weight", ta->weight, "its share under fair share (1..1000; create: 1 unless given)");
    cmd->add_option("--cohort", ta->cohort, "the cohort it borrows from and lends to (set: none to leave it)");
    cmd->add_option("--quota", ta->quota, "nominal GPUs per model, e.g. H100=64,A100=32 (a model not named: 0)");
    cmd->add_option("--borrow-limit", ta->borrow_limit, "GPUs per model it may borrow above its quota at most (default: no limit)");
    cmd->add_option("--lend-limit", ta->lend_limit, "GPUs per model of its quota others may use at most (default: all)");
    cmd->add_option("--order", ta->order, "its own queue order under a share order: fifo, priority, sjf or las");
    cmd->add_option("--default-time", ta->default_time, "a job's time limit when it gives none, e.g. 2h or 1-00:00:00 (none: unset)");
    cmd->add_option("--max-time", ta->max_time, "the longest time limit its jobs may ask (none: unset)");
    cmd->add_option("--priority", ta->priority,
                    "the priority class of its jobs that give no --priority (a [[priority_class]] of the fleet file; none: unset)");
    cmd->add_option("--unix-user", ta->unix_user,
                    "the unix user its jobs run as on nodes whose agent runs as root (none: the agent's --job-user)");
  };
  CLI::App* tcreate = tenant->add_subcommand("create", "A new tenant");
  tenant_flags(tcreate);
  tcreate->callback([conn, ta, exit_code] { *exit_code = TenantWrite(*conn, *ta, true); });
  CLI::App* tset = tenant->add_subcommand("set", "Change a tenant's weight, cohort, quotas, limits or order (the rest stays)");
  tenant_flags(tset);
  tset->callback([conn, ta, exit_code] { *exit_code = TenantWrite(*conn, *ta, false); });
  CLI::App* tlist = tenant->add_subcommand("list", "Every tenant (a tenant's token: its own)");
  AddConn(tlist, conn);
  tlist->callback([conn, exit_code] { *exit_code = TenantList(*conn); });
  CLI::App* tdelete = tenant->add_subcommand("delete", "Delete a tenant: its tokens stop working at once");
  AddConn(tdelete, conn);
  tdelete->add_option("name", ta->name, "the tenant")->required();
  tdelete->callback([conn, ta, exit_code] { *exit_code = Simple(*conn, "DELETE", "/v1/tenants/" + ta->name, "deleted tenant " + ta->name); });
  CLI::App* tenants = app.add_subcommand("tenants", "Every tenant: quota, use, borrowed and lent per GPU model, weight, decayed usage, fair-share rank");
  AddConn(tenants, conn);
  tenants->callback([conn, exit_code] { *exit_code = TenantList(*conn); });

  CLI::App* token = app.add_subcommand("token", "Tokens for tenants: create, list, revoke (admin)");
  token->require_subcommand(1);
  struct TokenArgs {
    std::string tenant, role = "user", name, ttl, id;
  };
  auto ka = std::make_shared<TokenArgs>();
  CLI::App* kcreate = token->add_subcommand("create", "A new token; prints the secret once, on stdout");
  AddConn(kcreate, conn);
  kcreate->add_option("--tenant", ka->tenant, "its tenant")->required();
  kcreate->add_option("--role", ka->role, "user (submit, see, cancel its tenant's jobs) or viewer (read only)")
      ->check(CLI::IsMember({"user", "viewer"}));
  kcreate->add_option("--name", ka->name, "who it is for");
  kcreate->add_option("--ttl", ka->ttl, "it expires after this long, e.g. 90d (default: never)");
  kcreate->callback([conn, ka, exit_code] { *exit_code = TokenCreate(*conn, ka->tenant, ka->role, ka->name, ka->ttl); });
  CLI::App* klist = token->add_subcommand("list", "Every token: id, tenant, name, role, state (never the secret)");
  AddConn(klist, conn);
  klist->callback([conn, exit_code] { *exit_code = TokenList(*conn); });
  CLI::App* krevoke = token->add_subcommand("revoke", "Revoke a token: refused from now on");
  AddConn(krevoke, conn);
  krevoke->add_option("id", ka->id, "the token's id (tok-...)")->required();
  krevoke->callback([conn, ka, exit_code] { *exit_code = Simple(*conn, "POST", "/v1/tokens/" + ka->id + "/revoke", "revoked " + ka->id); });

  CLI::App* usage = app.add_subcommand("usage", "GPU-hours and dollars the pool used and paid for, grouped (idle billed time too)");
  AddConn(usage, conn);
  auto usage_by = std::make_shared<std::string>("provider");
  auto usage_since = std::make_shared<std::string>();
  usage->add_option("--by", *usage_by, "group by these, comma-separated: provider, offer, tier, tenant, kind (job or idle), node, day");
  usage->add_option("--since", *usage_since, "only what ended in this long back, e.g. 7d, 12h (default: everything)");
  usage->callback([conn, usage_by, usage_since, exit_code] { *exit_code = Usage(*conn, *usage_by, *usage_since); });
  CLI::App* offers = app.add_subcommand("offers", "What the pool can acquire from providers: offers, prices, nodes held, blocked scopes");
  AddConn(offers, conn);
  offers->callback([conn, exit_code] { *exit_code = Offers(*conn); });

  auto ev = std::make_shared<std::pair<uint64_t, bool>>(0, false);
  CLI::App* events = app.add_subcommand("events", "The event log: jobs, nodes and GPUs changing state (-f follows it)");
  AddConn(events, conn);
  events->add_option("--since", ev->first, "only events after this number (0: from the start)");
  events->add_flag("-f,--follow", ev->second, "keep printing new events as they happen");
  auto actor = std::make_shared<std::string>();
  events->add_option("--actor", *actor,
                     "only the changes made by this token name or id, tenant, or 'admin' (who cancelled my job?)");
  events->callback([conn, ev, actor, exit_code] { *exit_code = EventsCmd(*conn, ev->first, ev->second, *actor); });

  auto node_name = std::make_shared<std::string>();
  CLI::App* node = app.add_subcommand("node", "Show one node");
  AddConn(node, conn);
  node->add_option("name", *node_name, "node name")->required();
  node->callback([conn, node_name, exit_code] { *exit_code = Simple(*conn, "GET", "/v1/nodes/" + *node_name, ""); });

  // gpupool gpu undrain NODE IDX | gpupool gpu xid NODE IDX XID
  auto gpu_args = std::make_shared<std::tuple<std::string, int, int>>("", 0, 0);
  CLI::App* gpu = app.add_subcommand("gpu", "A single GPU: self-test it, put it back in service, or report an XID on it");
  gpu->require_subcommand(1);
  CLI::App* gundrain = gpu->add_subcommand("undrain", "Put a quarantined GPU back in service");
  AddConn(gundrain, conn);
  gundrain->add_option("node", std::get<0>(*gpu_args), "node name")->required();
  gundrain->add_option("index", std::get<1>(*gpu_args), "GPU index")->required();
  gundrain->callback([conn, gpu_args, exit_code] {
    *exit_code = Simple(*conn, "POST", fmt::format("/v1/nodes/{}/gpus/{}/undrain", std::get<0>(*gpu_args), std::get<1>(*gpu_args)),
                        fmt::format("GPU {} on {} is back in service", std::get<1>(*gpu_args), std::get<0>(*gpu_args)));
  });
  CLI::App* gcheck = gpu->add_subcommand("check", "Self-test a quarantined GPU now on its node; a pass puts it back in service");
  AddConn(gcheck, conn);
  gcheck->add_option("node", std::get<0>(*gpu_args), "node name")->required();
  gcheck->add_option("index", std::get<1>(*gpu_args), "GPU index")->required();
  gcheck->callback([conn, gpu_args, exit_code] {
    const std::string& target = std::get<0>(*gpu_args);
    const int index = std::get<1>(*gpu_args);
    const std::string path = fmt::format("/v1/nodes/{}/gpus/{}", target, index);
    auto check_of = [&](const std::string& body) {
      const json n = json::parse(body, nullptr, false);
      if (!n.is_object() || !n.contains("gpus") || index < 0 || index >= static_cast<int>(n["gpus"].size())) return std::string();
      return n["gpus"][static_cast<size_t>(index)].value("check", std::string());
    };
    auto before = Call(*conn, "POST", path + "/check", "");
    *exit_code = 1;
    if (!before) return;
    // The agent runs the test at its next heartbeat; its result arrives with the one after.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto now = Call(*conn, "GET", "/v1/nodes/" + target, "");
      if (!now) return;
      const std::string result = check_of(*now);
      if (result.empty() || result == check_of(*before)) continue;
      fmt::print("GPU {} on {}: self-test {}\n", index, target, result);
      *exit_code = result.starts_with("passed") ? 0 : 1;
      return;
    }
    fmt::print(stderr, "gpupool gpu check: no result from {} within 3 minutes\n", target);
  });
  CLI::App* gxid = gpu->add_subcommand("xid", "Report an XID on a GPU (fault injection on simulated GPUs)");
  AddConn(gxid, conn);
  gxid->add_option("node", std::get<0>(*gpu_args), "node name")->required();
  gxid->add_option("index", std::get<1>(*gpu_args), "GPU index")->required();
  gxid->add_option("xid", std::get<2>(*gpu_args), "XID code, e.g. 79 (fallen off the bus)")->required();
  gxid->callback([conn, gpu_args, exit_code] {
    auto body = Call(*conn, "POST", fmt::format("/v1/nodes/{}/gpus/{}/xid", std::get<0>(*gpu_args), std::get<1>(*gpu_args)),
                     json{{"xid", std::get<2>(*gpu_args)}}.dump());
    if (!body) {
      *exit_code = 1;
      return;
    }
    fmt::print("{}\n", conn->json_out ? *body : json::parse(*body)["result"].get<std::string>());
    *exit_code = 0;
  });

  auto notice = std::make_shared<std::string>("30s");
  CLI::App* reclaim = app.add_subcommand("reclaim", "A provider takes a node back (spot): its jobs get SIGTERM and the notice to checkpoint, then move");
  AddConn(reclaim, conn);
  reclaim->add_option("name", *node_name, "node name")->required();
  reclaim->add_option("--notice", *notice, "time the jobs have before SIGKILL, e.g. 2m");
  reclaim->callback([conn, node_name, notice, exit_code] {
    const auto text = RequestBody(json{{"notice", *notice}}, "reclaim");
    if (!text) {
      *exit_code = 2;
      return;
    }
    auto body = Call(*conn, "POST", "/v1/nodes/" + *node_name + "/reclaim", *text);
    if (!body) {
      *exit_code = 1;
      return;
    }
    fmt::print("{}\n", conn->json_out ? *body : fmt::format("reclaiming {}: its jobs have {} to checkpoint, then move", *node_name, *notice));
    *exit_code = 0;
  });

  CLI::App* revoke = app.add_subcommand(
      "revoke-certs", "Revoke a node's client certificates (mutual TLS): its agent must register again, with the join token and "
                      "its credential, for a new one");
  AddConn(revoke, conn);
  revoke->add_option("name", *node_name, "node name")->required();
  revoke->callback([conn, node_name, exit_code] {
    *exit_code = Simple(*conn, "DELETE", "/v1/nodes/" + *node_name + "/certificates",
                        fmt::format("revoked the client certificates of {}", *node_name));
  });

  auto evict = std::make_shared<bool>(false);
  for (const char* verb : {"drain", "undrain"}) {
    CLI::App* d = app.add_subcommand(verb, std::string(verb) == "drain" ? "Stop placing new work on a node" : "Place work on a node again");
    AddConn(d, conn);
    d->add_option("name", *node_name, "node name")->required();
    const std::string v = verb;
    if (v == "drain") d->add_flag("--evict", *evict, "also move its running jobs elsewhere (they get SIGTERM first)");
    d->callback([conn, node_name, v, evict, exit_code] {
      const std::string q = (v == "drain" && *evict) ? "?evict=true" : "";
      *exit_code = Simple(*conn, "POST", "/v1/nodes/" + *node_name + "/" + v + q,
                          fmt::format("{} {}{}", v == "drain" ? "draining" : "undrained", *node_name,
                                      q.empty() ? "" : "; its running jobs are being moved"));
    });
  }
}

}  // namespace gp::app
