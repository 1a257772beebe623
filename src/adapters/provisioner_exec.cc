// The `exec` provisioner: every call runs `PROGRAM VERB`, writes the request as JSON on its
// standard input and reads the answer as JSON from its standard output (docs/providers.md).
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapters/provisioner.h"
#include "adapters/run_program.h"
#include "core/units.h"

namespace gp {

std::string_view ProvisionErrorClassName(ProvisionErrorClass c) {
  switch (c) {
    case ProvisionErrorClass::kCapacity: return "capacity";
    case ProvisionErrorClass::kQuota: return "quota";
    case ProvisionErrorClass::kAuth: return "auth";
    case ProvisionErrorClass::kInvalid: return "invalid";
    case ProvisionErrorClass::kTransient: return "transient";
  }
  return "?";
}

namespace {

using Json = nlohmann::json;

// Thrown inside this file only: an answer that breaks the contract, with the field it broke.
struct Broken {
  std::string message;
};

std::string Text(const Json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw Broken{fmt::format("'{}': required", key)};
    return {};
  }
  if (!it->is_string()) throw Broken{fmt::format("'{}': expected a string", key)};
  return it->get<std::string>();
}

Instance InstanceFrom(const Json& j) {
  if (!j.is_object()) throw Broken{"'instances[]': expected objects"};
  return Instance{.id = Text(j, "id", true), .claim = Text(j, "claim", false), .offer = Text(j, "offer", false),
                  .state = Text(j, "state", false)};
}

std::vector<Instance> InstancesFrom(const Json& j) {
  std::vector<Instance> out;
  auto it = j.find("instances");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) throw Broken{"'instances': expected an array"};
  for (const Json& e : *it) out.push_back(InstanceFrom(e));
  return out;
}

ProvisionError ErrorFrom(const Json& e) {
  if (!e.is_object()) throw Broken{"'error': expected an object"};
  ProvisionError out;
  const std::string cls = Text(e, "class", true);
  if (cls == "capacity") out.error_class = ProvisionErrorClass::kCapacity;
  else if (cls == "quota") out.error_class = ProvisionErrorClass::kQuota;
  else if (cls == "auth") out.error_class = ProvisionErrorClass::kAuth;
  else if (cls == "invalid") out.error_class = ProvisionErrorClass::kInvalid;
  else if (cls == "transient") out.error_class = ProvisionErrorClass::kTransient;
  else throw Broken{fmt::format("'error.class': '{}': expected capacity, quota, auth, invalid or transient", cls)};
  const std::string scope = Text(e, "scope", false);
  if (scope.empty() || scope == "offer") out.scope = Scope::kOffer;
  else if (scope == "zone" || scope == "site") out.scope = Scope::kSite;
  else if (scope == "region") out.scope = Scope::kRegion;
  else if (scope == "provider") out.scope = Scope::kProvider;
  else throw Broken{fmt::format("'error.scope': '{}': expected offer, zone, region or provider", scope)};
  out.message = Text(e, "message", false);
  if (auto it = e.find("retry_after_s"); it != e.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 86'400 * 7) {
      throw Broken{"'error.retry_after_s': expected seconds, 0..604800"};
    }
    out.retry_after = Millis{static_cast<int64_t>(it->get<double>() * 1000)};
  }
  return out;
}

class ExecProvisioner final : public Provisioner {
 public:
  ExecProvisioner(std::vector<std::string> program, Millis deadline, std::function<void(const std::string&)> log)
      : program_(std::move(program)), deadline_(deadline), log_(std::move(log)) {}

  Result<ProviderDescription> Describe() override {
    auto a = Call("describe", Json::object());
    if (!a) return tl::unexpected(a.error());
    return Parse<ProviderDescription>("describe", [&] {
      ProviderDescription d;
      if (auto it = a->find("max_parallel_creates"); it != a->end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 10'000) {
          throw Broken{"'max_parallel_creates': expected a whole number 1..10000"};
        }
        d.max_parallel_creates = static_cast<int>(it->get<int64_t>());
      }
      d.billing = Text(*a, "billing", false);
      return d;
    });
  }

  CreateOutcome Create(const CreateRequest& r) override {
    Json offer = Json::object();
    if (r.offer) {
      offer = Json{{"name", r.offer->name}, {"site", r.offer_site}, {"gpu_model", r.offer_model}, {"gpus", r.offer->gpus},
                   {"tier", PriceTierName(r.offer->tier)},
                   {"price_per_hour", static_cast<double>(r.offer->price_per_hour.value()) / kMicroUsdPerUsd}};
    }
    const Json req{{"claim", r.claim}, {"offer", offer}, {"count", r.count}, {"server", r.server}, {"join_token", r.join_token}};
    CreateOutcome out;
    auto a = Call("create", req);
    if (!a) {
      // No answer we can read: nothing known to be created (a later `list` finds out).
      out.error = ProvisionError{.error_class = ProvisionErrorClass::kTransient, .message = a.error().message()};
      return out;
    }
    auto parsed = Parse<CreateOutcome>("create", [&] {
      CreateOutcome o;
      o.instances = InstancesFrom(*a);
      if (auto it = a->find("error"); it != a->end() && !it->is_null()) o.error = ErrorFrom(*it);
      return o;
    });
    if (!parsed) {
      out.error = ProvisionError{.error_class = ProvisionErrorClass::kTransient, .message = parsed.error().message()};
      return out;
    }
    return *parsed;
  }

  Status Delete(const std::vector<std::string>& ids) override {
    auto a = Call("delete", Json{{"instances", ids}});
    if (!a) return a.error();
    auto e = Parse<int>("delete", [&] {
      if (auto it = a->find("error"); it != a->end() && !it->is_null()) {
        const ProvisionError pe = ErrorFrom(*it);
        throw Broken{fmt::format("{} error: {}", ProvisionErrorClassName(pe.error_class), pe.message)};
      }
      return 0;
    });
    return e ? Status::Ok() : e.error();
  }

  Result<std::vector<Instance>> List() override {
    auto a = Call("list", Json::object());
    if (!a) return tl::unexpected(a.error());
    return Parse<std::vector<Instance>>("list", [&] { return InstancesFrom(*a); });
  }

  Result<std::vector<ProviderOffer>> Offers() override {
    auto a = Call("offers", Json::object());
    if (!a) return tl::unexpected(a.error());
    return Parse<std::vector<ProviderOffer>>("offers", [&] {
      std::vector<ProviderOffer> out;
      auto it = a->find("offers");
      if (it == a->end() || it->is_null()) return out;
      if (!it->is_array()) throw Broken{"'offers': expected an array"};
      for (const Json& e : *it) {
        if (!e.is_object()) throw Broken{"'offers[]': expected objects"};
        ProviderOffer o{.name = Text(e, "name", true), .site = Text(e, "site", true), .gpu_model = Text(e, "gpu_model", true)};
        auto number = [&](const char* key, double lo, double hi, double fallback) {
          auto v = e.find(key);
          if (v == e.end() || v->is_null()) return fallback;
          if (!v->is_number() || v->get<double>() < lo || v->get<double>() > hi) {
            throw Broken{fmt::format("'offers[{}].{}': expected a number {}..{}", o.name, key, lo, hi)};
          }
          return v->get<double>();
        };
        o.gpus = static_cast<int>(number("gpus", 1, 16, 0));
        if (o.gpus == 0) throw Broken{fmt::format("'offers[{}].gpus': required", o.name)};
        if (std::string t = Text(e, "tier", false); !t.empty()) o.tier = t;
        o.price_per_hour = number("price_per_hour", 0, 1e6, -1);
        if (o.price_per_hour < 0) throw Broken{fmt::format("'offers[{}].price_per_hour': required", o.name)};
        o.gpu_memory_mib = static_cast<int64_t>(number("gpu_memory_mib", 0, 1 << 24, 0));
        o.cpu_cores = static_cast<int>(number("cpu_cores", 0, 100'000, 0));
        o.memory_mib = static_cast<int64_t>(number("memory_mib", 0, 1e12, 0));
        o.max_nodes = static_cast<int>(number("max_nodes", 0, 1e6, 16));
        o.boot_time_s = static_cast<int64_t>(number("boot_time_s", 0, 86'400, 120));
        o.billing_increment_s = static_cast<int64_t>(number("billing_increment_s", 1, 86'400 * 366, 1));
        o.min_billed_s = static_cast<int64_t>(number("min_billed_s", 0, 86'400 * 366, 60));
        if (auto v = e.find("available"); v != e.end() && !v->is_null()) {
          if (!v->is_boolean()) throw Broken{fmt::format("'offers[{}].available': expected true or false", o.name)};
          o.available = v->get<bool>();
        }
        out.push_back(std::move(o));
      }
      return out;
    });
  }

  Result<std::vector<Interruption>> Events() override {
    auto a = Call("events", Json::object());
    if (!a) return tl::unexpected(a.error());
    return Parse<std::vector<Interruption>>("events", [&] {
      std::vector<Interruption> out;
      auto it = a->find("interruptions");
      if (it == a->end() || it->is_null()) return out;
      if (!it->is_array()) throw Broken{"'interruptions': expected an array"};
      for (const Json& e : *it) {
        if (!e.is_object()) throw Broken{"'interruptions[]': expected objects"};
        auto d = e.find("deadline_ms");
        if (d == e.end() || !d->is_number_integer()) throw Broken{"'interruptions[].deadline_ms': expected a whole number"};
        out.push_back(Interruption{.instance = Text(e, "instance", true), .deadline_ms = d->get<int64_t>()});
      }
      return out;
    });
  }

 private:
  template <typename T, typename F>
  Result<T> Parse(std::string_view verb, F&& f) {
    try {
      return f();
    } catch (const Broken& b) {
      return Error(StatusCode::kParse, fmt::format("{} {}: the answer breaks the contract: {}", Name(), verb, b.message));
    } catch (const nlohmann::json::exception& e) {
      return Error(StatusCode::kParse, fmt::format("{} {}: the answer breaks the contract: {}", Name(), verb, e.what()));
    }
  }

  // The program as messages name it: its file, and a script's after an interpreter
  // ("python3 fake_cloud.py").
  std::string Name() const {
    if (program_.empty()) return "provisioner";
    auto base = [](const std::string& p) { return std::filesystem::path(p).filename().string(); };
    std::string name = base(program_[0]);
    if (program_.size() > 1 && !program_[1].starts_with("-")) name += " " + base(program_[1]);
    return name;
  }

  // Runs the program for `verb`; its answer as a JSON object, or why there is none.
  Result<Json> Call(std::string_view verb, const Json& request) {
    std::vector<std::string> argv = program_;
    argv.emplace_back(verb);
    auto run = RunProgram(argv, request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), deadline_);
    if (!run) return tl::unexpected(run.error());
    if (log_ && !run->err.empty()) {
      std::istringstream lines(run->err);
      for (std::string line; std::getline(lines, line);) log_(fmt::format("{} {}: {}", Name(), verb, line));
    }
    if (run->timed_out) {
      return Error(StatusCode::kUnavailable, fmt::format("{} {}: no answer within {} (killed)", Name(), verb, FormatMillis(deadline_)));
    }
    if (run->exit_code != 0) {
      return Error(StatusCode::kUnavailable,
                   fmt::format("{} {}: exited with {}{}", Name(), verb,
                               run->signal ? fmt::format("signal {}", run->signal) : fmt::format("status {}", run->exit_code),
                               run->err.empty() ? "" : fmt::format(" ({})", run->err.substr(0, 300))));
    }
    if (run->out_truncated) return Error(StatusCode::kParse, fmt::format("{} {}: an answer over 1 MiB", Name(), verb));
    Json j = Json::parse(run->out, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Error(StatusCode::kParse, fmt::format("{} {}: the answer is not a JSON object: '{}'", Name(), verb, run->out.substr(0, 200)));
    }
    return j;
  }

  std::vector<std::string> program_;
  Millis deadline_;
  std::function<void(const std::string&)> log_;
};

}  // namespace

std::unique_ptr<Provisioner> MakeExecProvisioner(std::vector<std::string> program, Millis deadline,
                                                 std::function<void(const std::string& line)> log) {
  return std::make_unique<ExecProvisioner>(std::move(program), deadline, std::move(log));
}

}  // namespace gp
