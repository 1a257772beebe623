// The TOML fleet file (format in docs/fleet.md). toml++ lives in this one translation unit.
// Every value is checked; an unknown key is an error (a typo must not pass silently), and
// every message starts "file:line: [[section]] 'name': field: ...".
#include <fmt/format.h>

#include <set>
#include <toml++/toml.h>

#include "adapters/fleet_loader.h"
#include "core/units.h"

namespace gp {
namespace {

// Thrown inside this file only and turned into a Status at its edge.
struct FieldError {
  std::string message;
};

class Section {
 public:
  Section(const toml::table& t, const std::string& source, std::string where)
      : t_(t), source_(source), where_(std::move(where)) {}

  [[noreturn]] void Fail(const toml::node* at, std::string_view key, const std::string& what) const {
    const auto line = at ? at->source().begin.line : t_.source().begin.line;
    throw FieldError{fmt::format("{}:{}: {}: {}{}", source_, line, where_, key.empty() ? "" : std::string(key) + ": ", what)};
  }

  const toml::node* Get(std::string_view key) {
    used_.insert(std::string(key));
    return t_.get(key);
  }

  std::optional<std::string> String(std::string_view key) {
    const toml::node* n = Get(key);
    if (!n) return std::nullopt;
    if (!n->is_string()) Fail(n, key, "expected a string");
    return n->value<std::string>();
  }
  std::string RequiredString(std::string_view key) {
    auto v = String(key);
    if (!v || v->empty()) Fail(nullptr, key, "required");
    return *v;
  }
  std::optional<int64_t> Int(std::string_view key, int64_t lo, int64_t hi) {
    const toml::node* n = Get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer()) Fail(n, key, "expected a whole number");
    const int64_t v = *n->value<int64_t>();
    if (v < lo || v > hi) Fail(n, key, fmt::format("must be {}..{}, got {}", lo, hi, v));
    return v;
  }
  std::optional<double> Number(std::string_view key, double lo, double hi) {
    const toml::node* n = Get(key);
    if (!n) return std::nullopt;
    if (!n->is_number()) Fail(n, key, "expected a number");
    const double v = *n->value<double>();
    if (!(v >= lo && v <= hi)) Fail(n, key, fmt::format("must be {}..{}, got {}", lo, hi, v));
    return v;
  }
  // A string with units ("80GiB") parsed by `parse`; a bare number is taken in `bare_unit`.
  template <typename T, typename Parse>
  std::optional<T> Unit(std::string_view key, Parse parse, std::string_view bare_unit) {
    const toml::node* n = Get(key);
    if (!n) return std::nullopt;
    std::string text;
    if (n->is_string()) {
      text = *n->value<std::string>();
    } else if (n->is_number()) {
      text = fmt::format("{}{}", *n->value<double>(), bare_unit);
    } else {
      Fail(n, key, "expected a string with a unit");
    }
    auto r = parse(text);
    if (!r) Fail(n, key, r.error().message());
    return *r;
  }
  const toml::table* Table(std::string_view key) {
    const toml::node* n = Get(key);
    if (!n) return nullptr;
    if (!n->is_table()) Fail(n, key, "expected a table");
    return n->as_table();
  }
  void RejectUnknown() const {
    for (const auto& [k, v] : t_) {
      if (!used_.count(std::string(k.str()))) {
        std::string known;
        for (const std::string& u : used_) known += (known.empty() ? "" : ", ") + u;
        Fail(&v, k.str(), fmt::format("unknown field; expected one of: {}", known));
      }
    }
  }
  const std::string& where() const { return where_; }
  // Once the entry's name is known, messages use it rather than its position.
  void Rename(std::string where) { where_ = std::move(where); }

 private:
  const toml::table& t_;
  const std::string& source_;
  std::string where_;
  std::set<std::string> used_;
};

template <typename F>
void ForEachEntry(const toml::table& root, std::string_view key, const std::string& source, F&& f) {
  const toml::node* n = root.get(key);
  if (!n) return;
  const toml::array* arr = n->as_array();
  if (!arr) throw FieldError{fmt::format("{}:{}: '{}' must be an array of tables ([[{}]])", source, n->source().begin.line, key, key)};
  int i = 0;
  for (const toml::node& e : *arr) {
    ++i;
    if (!e.is_table()) throw FieldError{fmt::format("{}:{}: [[{}]] #{} is not a table", source, e.source().begin.line, key, i)};
    f(*e.as_table(), i);
  }
}

void ReadProvider(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[provider]] #{}", i));
  Provider p{.id = ProviderId{static_cast<uint32_t>(fleet.providers.size())}, .name = s.RequiredString("name")};
  s.Rename(fmt::format("[[provider]] '{}'", p.name));
  if (fleet.FindProvider(p.name)) s.Fail(nullptr, "name", "used by another provider");
  if (auto kind = s.String("kind")) {
    auto k = ParseProviderKind(*kind);
    if (!k) s.Fail(t.get("kind"), "kind", k.error().message());
    p.kind = *k;
  }
  if (const toml::table* prices = s.Table("prices")) {
    for (const auto& [model, tiers] : *prices) {
      auto id = fleet.InternModel(model.str());
      if (!id) s.Fail(&tiers, "prices", id.error().message());
      const toml::table* tt = tiers.as_table();
      if (!tt) s.Fail(&tiers, "prices", fmt::format("{}: expected a table of tier = USD per GPU-hour", model.str()));
      for (const auto& [tier, usd] : *tt) {
        auto tr = ParsePriceTier(tier.str());
        if (!tr) s.Fail(&usd, "prices", tr.error().message());
        if (!usd.is_number() || *usd.value<double>() < 0 || *usd.value<double>() > 1e6) {
          s.Fail(&usd, "prices", fmt::format("{}.{}: expected USD per GPU-hour (0..1e6)", model.str(), tier.str()));
        }
        p.prices.push_back(Price{.model = *id, .tier = *tr, .per_gpu_hour = UsdToMicro(*usd.value<double>())});
      }
    }
  }
  p.max_gpus = static_cast<int>(s.Int("max_gpus", 0, 10'000'000).value_or(0));
  if (const toml::node* pv = s.Get("provisioner")) {
    if (pv->is_string() && *pv->value<std::string>() == "local") {
      p.provisioner.kind = ProvisionerSpec::Kind::kLocal;
    } else if (const toml::array* cmd = pv->as_array(); cmd && !cmd->empty()) {
      p.provisioner.kind = ProvisionerSpec::Kind::kExec;
      for (const toml::node& a : *cmd) {
        if (!a.is_string()) s.Fail(&a, "provisioner", "expected the program and its arguments, as strings");
        p.provisioner.command.push_back(*a.value<std::string>());
      }
    } else {
      s.Fail(pv, "provisioner", "expected \"local\" or [\"PROGRAM\", \"ARG\", ...] (docs/providers.md)");
    }
  }
  if (auto d = s.Unit<Millis>("provisioner_deadline", ParseDuration, "s")) {
    if (d->value() < 100) s.Fail(t.get("provisioner_deadline"), "provisioner_deadline", "at least 100ms");
    p.provisioner.deadline = *d;
  }
  if (const toml::table* local = s.Table("local")) {
    Section ls(*local, source, s.where() + " local");
    ProvisionerSpec& v = p.provisioner;
    v.seed = static_cast<uint64_t>(ls.Int("seed", 0, INT64_MAX).value_or(1));
    if (auto d = ls.Unit<Millis>("boot_delay", ParseDuration, "s")) v.boot_delay_min = v.boot_delay_max = *d;
    if (auto d = ls.Unit<Millis>("boot_delay_max", ParseDuration, "s")) v.boot_delay_max = *d;
    if (v.boot_delay_max < v.boot_delay_min) ls.Fail(local->get("boot_delay_max"), "boot_delay_max", "must be at least boot_delay");
    if (const toml::node* st = ls.Get("stockout")) {
      const toml::array* arr = st->as_array();
      if (!arr) ls.Fail(st, "stockout", "expected [\"offer name\", ...]");
      for (const toml::node& o : *arr) {
        if (!o.is_string()) ls.Fail(&o, "stockout", "expected offer names");
        v.stockout.push_back(*o.value<std::string>());
      }
    }
    v.quota_gpus = static_cast<int>(ls.Int("quota_gpus", 0, 10'000'000).value_or(0));
    if (auto d = ls.Unit<Millis>("spot_mtbf", ParseDuration, "h")) v.spot_mtbf = *d;
    if (auto d = ls.Unit<Millis>("spot_lifetime", ParseDuration, "s")) v.spot_lifetime = *d;
    if (auto d = ls.Unit<Millis>("notice", ParseDuration, "s")) v.notice = *d;
    ls.RejectUnknown();
    if (v.kind != ProvisionerSpec::Kind::kLocal) s.Fail(local, "local", "only with provisioner = \"local\"");
  }
  s.RejectUnknown();
  fleet.providers.push_back(std::move(p));
}

void ReadSite(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[site]] #{}", i));
  Site site{.id = SiteId{static_cast<uint32_t>(fleet.sites.size())}, .name = s.RequiredString("name")};
  s.Rename(fmt::format("[[site]] '{}'", site.name));
  if (fleet.FindSite(site.name)) s.Fail(nullptr, "name", "used by another site");
  site.region = s.String("region").value_or(site.name);
  if (const toml::node* loc = s.Get("location")) {
    const toml::array* a = loc->as_array();
    if (!a || a->size() != 2 || !(*a)[0].is_number() || !(*a)[1].is_number()) {
      s.Fail(loc, "location", "expected [latitude, longitude] in degrees");
    }
    site.location = GeoPoint{*(*a)[0].value<double>(), *(*a)[1].value<double>()};
    if (std::abs(site.location.latitude_deg) > 90 || std::abs(site.location.longitude_deg) > 180) {
      s.Fail(loc, "location", "latitude must be -90..90 and longitude -180..180");
    }
  }
  s.RejectUnknown();
  fleet.sites.push_back(std::move(site));
}

SiteId SiteNamed(const Fleet& fleet, Section& s, std::string_view key, const std::string& name) {
  auto id = fleet.FindSite(name);
  if (!id) s.Fail(nullptr, key, fmt::format("unknown site '{}' (declare it with [[site]])", name));
  return *id;
}

void ReadLink(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[link]] #{}", i));
  const toml::node* sites = s.Get("sites");
  const toml::array* a = sites ? sites->as_array() : nullptr;
  if (!a || a->size() != 2 || !(*a)[0].is_string() || !(*a)[1].is_string()) {
    s.Fail(sites, "sites", "expected [\"site-a\", \"site-b\"]");
  }
  Link l;
  l.a = SiteNamed(fleet, s, "sites", *(*a)[0].value<std::string>());
  l.b = SiteNamed(fleet, s, "sites", *(*a)[1].value<std::string>());
  if (l.a == l.b) s.Fail(sites, "sites", "a link joins two different sites");
  auto bw = s.Unit<BitsPerSecond>("bandwidth", ParseBandwidth, "bps");
  if (!bw || bw->value() <= 0) s.Fail(nullptr, "bandwidth", "required, positive (e.g. \"10Gbps\")");
  l.bandwidth = *bw;
  if (auto lat = s.Unit<Millis>("latency", ParseDuration, "ms")) l.latency = Micros{lat->value() * 1000};
  if (auto e = s.Number("egress_per_gb", 0, 1e6)) l.egress_per_gb = UsdToMicro(*e);
  s.RejectUnknown();
  fleet.links.push_back(l);
}

void ReadNodes(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[nodes]] #{}", i));
  NodeGroupSpec g;
  g.name_prefix = s.RequiredString("name");
  s.Rename(fmt::format("[[nodes]] '{}'", g.name_prefix));
  g.count = static_cast<int>(s.Int("count", 1, 1'000'000).value_or(1));
  g.gpus = static_cast<int>(s.Int("gpus", 0, kMaxGpusPerNode).value_or(0));
  g.gpu_model = s.String("gpu_model").value_or("");
  if (g.gpus > 0 && g.gpu_model.empty()) s.Fail(nullptr, "gpu_model", "required when gpus > 0");
  g.gpu_memory = s.Unit<MiB>("gpu_memory", ParseMiB, "GiB");
  if (auto cores = s.Number("cpu_cores", 0, 1e5)) g.cpu = MilliCpu{static_cast<int64_t>(*cores * 1000)};
  g.memory = s.Unit<MiB>("memory", ParseMiB, "GiB");
  if (auto nic = s.Unit<BitsPerSecond>("nic", ParseBandwidth, "Gbps")) g.nic = *nic;
  g.site = SiteNamed(fleet, s, "site", s.RequiredString("site"));
  const std::string provider = s.RequiredString("provider");
  auto pid = fleet.FindProvider(provider);
  if (!pid) s.Fail(nullptr, "provider", fmt::format("unknown provider '{}' (declare it with [[provider]])", provider));
  g.provider = *pid;
  if (auto tier = s.String("tier")) {
    auto tr = ParsePriceTier(*tier);
    if (!tr) s.Fail(t.get("tier"), "tier", tr.error().message());
    g.tier = *tr;
  }
  if (auto nv = s.String("nvlink")) {
    if (*nv == "all") g.nvlink = NodeGroupSpec::NvLink::kAll;
    else if (*nv == "pairs") g.nvlink = NodeGroupSpec::NvLink::kPairs;
    else if (*nv == "none") g.nvlink = NodeGroupSpec::NvLink::kNone;
    else s.Fail(t.get("nvlink"), "nvlink", fmt::format("'{}': expected all, pairs or none", *nv));
  }
  if (const toml::table* labels = s.Table("labels")) {
    for (const auto& [k, v] : *labels) {
      if (!v.is_string()) s.Fail(&v, "labels", fmt::format("{}: expected a string", k.str()));
      g.labels.emplace_back(std::string(k.str()), *v.value<std::string>());
    }
  }
  if (const toml::table* u = s.Table("utilisation")) {
    Section us(*u, source, s.where() + " utilisation");
    auto frac = [&](std::string_view k) { return PerMille{static_cast<int64_t>(std::llround(us.Number(k, 0, 1).value_or(0) * 1000))}; };
    Utilisation m{.cpu = frac("cpu"), .gpu = frac("gpu"), .memory = frac("memory")};
    if (auto cap = us.Number("capacity", 0.001, 1000)) m.capacity = PerMille{static_cast<int64_t>(std::llround(*cap * 1000))};
    us.RejectUnknown();
    g.measured = m;
  }
  s.RejectUnknown();
  if (Status st = AddNodeGroup(fleet, g, /*exact_name_for_single=*/true); !st.ok()) s.Fail(nullptr, "", st.message());
}

// An offer: capacity a provider can give when work waits. Its price defaults to the
// provider's price per GPU-hour for the model and tier, times its GPUs.
void ReadOffer(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[offer]] #{}", i));
  Offer o;
  const std::string provider = s.RequiredString("provider");
  auto pid = fleet.FindProvider(provider);
  if (!pid) s.Fail(nullptr, "provider", fmt::format("unknown provider '{}' (declare it with [[provider]])", provider));
  o.provider = *pid;
  const std::string site = s.RequiredString("site");
  o.site = SiteNamed(fleet, s, "site", site);
  const std::string model = s.RequiredString("gpu_model");
  auto mid = fleet.InternModel(model);
  if (!mid) s.Fail(t.get("gpu_model"), "gpu_model", mid.error().message());
  o.model = *mid;
  o.gpus = static_cast<int>(s.Int("gpus", 1, kMaxGpusPerNode).value_or(8));
  if (auto tier = s.String("tier")) {
    auto tr = ParsePriceTier(*tier);
    if (!tr) s.Fail(t.get("tier"), "tier", tr.error().message());
    o.tier = *tr;
  }
  o.name = s.String("name").value_or(fmt::format("{}/{}/{}x{}/{}", provider, site, fleet.model(o.model).name, o.gpus,
                                                 PriceTierName(o.tier)));
  s.Rename(fmt::format("[[offer]] '{}'", o.name));
  for (const Offer& other : fleet.offers) {
    if (other.name == o.name) s.Fail(t.get("name"), "name", "used by another offer (give each a name of its own)");
  }
  o.gpu_memory = s.Unit<MiB>("gpu_memory", ParseMiB, "GiB").value_or(fleet.model(o.model).memory);
  const double cores = s.Number("cpu_cores", 0, 1e5).value_or(8.0 * o.gpus);
  o.cpu = MilliCpu{static_cast<int64_t>(cores * 1000)};
  o.memory = s.Unit<MiB>("memory", ParseMiB, "GiB").value_or(MiB{int64_t{64} * 1024 * o.gpus});
  if (auto usd = s.Number("price", 0, 1e7)) {
    o.price_per_hour = UsdToMicro(*usd);
  } else {
    const Provider& p = fleet.provider(o.provider);
    std::optional<MicroUsd> per_gpu;
    for (const Price& pr : p.prices) {
      if (pr.model == o.model && pr.tier == o.tier) per_gpu = pr.per_gpu_hour;
    }
    if (!per_gpu) {
      s.Fail(nullptr, "price", fmt::format("required: USD per node-hour (provider '{}' lists no {} price for {})", p.name,
                                           PriceTierName(o.tier), fleet.model(o.model).name));
    }
    o.price_per_hour = MicroUsd{per_gpu->value() * o.gpus};
  }
  o.min_nodes = static_cast<int>(s.Int("min_nodes", 0, kMaxFleetNodes).value_or(0));
  o.max_nodes = static_cast<int>(s.Int("max_nodes", 0, kMaxFleetNodes).value_or(16));
  if (o.max_nodes < o.min_nodes) s.Fail(t.get("max_nodes"), "max_nodes", fmt::format("must be at least min_nodes ({})", o.min_nodes));
  if (auto v = s.Unit<Millis>("boot_time", ParseDuration, "s")) o.boot_time = *v;
  if (auto v = s.Unit<Millis>("billing_increment", ParseDuration, "s")) {
    if (v->value() <= 0) s.Fail(t.get("billing_increment"), "billing_increment", "must be positive (\"1s\", \"1h\", \"720h\")");
    o.billing_increment = *v;
  }
  if (auto v = s.Unit<Millis>("min_billed", ParseDuration, "s")) o.min_billed = *v;
  if (const toml::node* a = s.Get("available")) {
    if (!a->is_boolean()) s.Fail(a, "available", "expected true or false");
    o.available = *a->value<bool>();
  }
  s.RejectUnknown();
  fleet.offers.push_back(std::move(o));
}

// default_time and max_time, as Slurm's --time spells them (a bare number: minutes), of a
// [[tenant]] or a [[priority_class]].
void ReadTimeLimits(Section& s, Millis& default_time, Millis& max_time) {
  for (auto [key, field] : {std::pair<const char*, Millis*>{"default_time", &default_time}, {"max_time", &max_time}}) {
    if (auto v = s.Unit<Millis>(key, ParseTimeLimit, "m")) *field = *v;
  }
}

// A tenant: its weight, cohort, own queue order and quotas per GPU model, e.g.
//   [[tenant]]
//   name = "llm"
//   weight = 2
//   cohort = "research"
//   quota = { H100 = 64, A100 = 32 }
//   borrow_limit = { H100 = 16 }
//   lend_limit = { A100 = 8 }
void ReadTenant(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[tenant]] #{}", i));
  TenantConfig c;
  c.name = s.RequiredString("name");
  if (!ValidTenantName(c.name)) s.Fail(t.get("name"), "name", "1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit");
  s.Rename(fmt::format("[[tenant]] '{}'", c.name));
  for (const TenantConfig& other : fleet.tenants) {
    if (other.name == c.name) s.Fail(t.get("name"), "name", "used by another [[tenant]]");
  }
  c.weight = static_cast<int>(s.Int("weight", 1, 1000).value_or(1));
  c.cohort = s.String("cohort").value_or("");
  if (!c.cohort.empty() && !ValidTenantName(c.cohort)) {
    s.Fail(t.get("cohort"), "cohort", "1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit");
  }
  if (c.cohort == c.name) s.Fail(t.get("cohort"), "cohort", "a tenant cannot be its own cohort");
  c.order = s.String("order").value_or("");
  c.priority = s.String("priority").value_or("");  // a [[priority_class]]'s name, checked once all are read
  ReadTimeLimits(s, c.default_time, c.max_time);
  // GPUs per model: { H100 = 64 }.
  auto per_model = [&](std::string_view key, void (*set)(QuotaLimits&, int64_t)) {
    const toml::table* m = s.Table(key);
    if (!m) return;
    for (const auto& [model, v] : *m) {
      if (!v.is_integer() || *v.value<int64_t>() < 0 || *v.value<int64_t>() > kMaxQuotaGpus) {
        s.Fail(&v, fmt::format("{}.{}", key, model.str()), fmt::format("expected a whole number of GPUs, 0..{}", kMaxQuotaGpus));
      }
      set(c.quota[std::string(model.str())], *v.value<int64_t>());
    }
  };
  per_model("quota", [](QuotaLimits& q, int64_t v) { q.nominal = v; });
  per_model("borrow_limit", [](QuotaLimits& q, int64_t v) { q.borrow_limit = v; });
  per_model("lend_limit", [](QuotaLimits& q, int64_t v) { q.lend_limit = v; });
  s.RejectUnknown();
  if (Status st = ValidateTenantConfig(c); !st.ok()) s.Fail(nullptr, "", st.message());
  fleet.tenants.push_back(std::move(c));
}

// A priority class: [[priority_class]] name = "high", value = 1000, preemptible = false,
// min_run = "10m".
void ReadPriorityClass(Fleet& fleet, const toml::table& t, const std::string& source, int i) {
  Section s(t, source, fmt::format("[[priority_class]] #{}", i));
  PriorityClass c;
  c.name = s.RequiredString("name");
  if (!ValidTenantName(c.name)) s.Fail(t.get("name"), "name", "1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit");
  s.Rename(fmt::format("[[priority_class]] '{}'", c.name));
  const auto value = s.Int("value", -1'000'000, 1'000'000);
  if (!value) s.Fail(nullptr, "value", "required: a whole number, -1000000..1000000");
  c.value = static_cast<int>(*value);
  for (const PriorityClass& other : fleet.priority_classes) {
    if (other.name == c.name) s.Fail(t.get("name"), "name", "used by another [[priority_class]]");
    if (other.value == c.value) s.Fail(t.get("value"), "value", fmt::format("used by [[priority_class]] '{}'", other.name));
  }
  if (const toml::node* p = s.Get("preemptible")) {
    if (!p->is_boolean()) s.Fail(p, "preemptible", "expected true or false");
    c.preemptible = *p->value<bool>();
  }
  if (auto v = s.Unit<Millis>("min_run", ParseDuration, "s")) c.min_run = *v;
  ReadTimeLimits(s, c.default_time, c.max_time);
  if (c.max_time.value() > 0 && c.default_time > c.max_time) s.Fail(t.get("default_time"), "default_time", "above max_time");
  s.RejectUnknown();
  fleet.priority_classes.push_back(std::move(c));
}

}  // namespace

Result<Fleet> ParseFleetToml(std::string_view text, const std::string& source, FleetNodes nodes) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return ParseError(fmt::format("{}:{}:{}: {}", source, e.source().begin.line, e.source().begin.column, e.description()));
  }
  Fleet fleet;
  try {
    for (const auto& [k, v] : root) {
      const std::string_view key = k.str();
      if (key != "provider" && key != "site" && key != "link" && key != "nodes" && key != "name" && key != "failures" &&
          key != "offer" && key != "autoscale" && key != "tenant" && key != "priority_class") {
        throw FieldError{fmt::format("{}:{}: unknown section '{}'; expected [[provider]], [[site]], [[link]], [[nodes]], [[offer]], "
                                     "[[tenant]], [[priority_class]], [autoscale] or [failures]",
                                     source, v.source().begin.line, key)};
      }
    }
    ForEachEntry(root, "provider", source, [&](const toml::table& t, int i) { ReadProvider(fleet, t, source, i); });
    ForEachEntry(root, "site", source, [&](const toml::table& t, int i) { ReadSite(fleet, t, source, i); });
    ForEachEntry(root, "link", source, [&](const toml::table& t, int i) { ReadLink(fleet, t, source, i); });
    ForEachEntry(root, "nodes", source, [&](const toml::table& t, int i) { ReadNodes(fleet, t, source, i); });
    ForEachEntry(root, "offer", source, [&](const toml::table& t, int i) { ReadOffer(fleet, t, source, i); });
    ForEachEntry(root, "tenant", source, [&](const toml::table& t, int i) { ReadTenant(fleet, t, source, i); });
    ForEachEntry(root, "priority_class", source, [&](const toml::table& t, int i) { ReadPriorityClass(fleet, t, source, i); });
    for (const TenantConfig& c : fleet.tenants) {
      for (const TenantConfig& o : fleet.tenants) {
        if (c.cohort == o.name) {
          throw FieldError{fmt::format("{}: [[tenant]] '{}': cohort: '{}' is a tenant's name; cohorts are groups of tenants "
                                       "(no nesting, so no cycle)",
                                       source, c.name, c.cohort)};
        }
      }
    }
    if (const toml::node* a = root.get("autoscale")) {
      if (!a->is_table()) throw FieldError{fmt::format("{}:{}: [autoscale] must be a table", source, a->source().begin.line)};
      Section as(*a->as_table(), source, "[autoscale]");
      if (auto usd = as.Number("max_usd_per_hour", 0, 1e9)) fleet.autoscale.max_per_hour = UsdToMicro(*usd);
      as.RejectUnknown();
    }
    if (const toml::node* f = root.get("failures")) {
      if (!f->is_table()) throw FieldError{fmt::format("{}:{}: [failures] must be a table", source, f->source().begin.line)};
      Section fs(*f->as_table(), source, "[failures]");
      if (auto v = fs.Unit<Millis>("node_mtbf", ParseDuration, "h")) fleet.failures.node_mtbf = *v;
      if (auto v = fs.Unit<Millis>("node_repair", ParseDuration, "h")) fleet.failures.node_repair = *v;
      if (auto v = fs.Unit<Millis>("spot_mtbf", ParseDuration, "h")) fleet.failures.spot_mtbf = *v;
      if (auto v = fs.Unit<Millis>("gpu_xid_mtbf", ParseDuration, "h")) fleet.failures.gpu_xid_mtbf = *v;
      fs.RejectUnknown();
    }
  } catch (const FieldError& e) {
    return InvalidArgument(e.message);
  }
  for (const TenantConfig& t : fleet.tenants) {
    if (t.priority.empty()) continue;
    if (auto c = fleet.PriorityClassNamed(t.priority); !c) {
      return InvalidArgument(fmt::format("{}: [[tenant]] '{}': priority: {}", source, t.name, c.error().message()));
    }
  }
  if (nodes == FleetNodes::kRequired && fleet.nodes.empty() && fleet.offers.empty()) {
    return InvalidArgument(fmt::format("{}: no [[nodes]] and no [[offer]]; a fleet needs nodes, or offers to get them from", source));
  }
  return fleet;
}

}  // namespace gp
