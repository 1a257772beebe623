#include "sim/plots.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace gp {
namespace {

constexpr double kWidth = 760;
constexpr double kHeight = 360;
constexpr double kLeft = 64;
constexpr double kRight = 16;
constexpr double kTop = 40;
constexpr double kBottom = 48;
constexpr const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Esc(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Round tick steps: 1, 2 or 5 times a power of ten, about `count` of them over [lo, hi].
std::vector<double> NiceTicks(double lo, double hi, int count) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

std::string Num(double v) {
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-2)) return fmt::format("{:.0e}", v);
  if (v == std::floor(v)) return fmt::format("{:.0f}", v);
  return fmt::format("{:.2g}", v);
}

// Time-weighted means of a step function over `buckets` equal spans of [t0, t1].
std::vector<std::pair<double, double>> Bucketed(const std::vector<std::pair<double, double>>& steps, double t1, size_t buckets) {
  std::vector<std::pair<double, double>> out;
  if (steps.empty()) return out;
  const double t0 = steps.front().first;
  if (!(t1 > t0) || steps.size() <= buckets) {
    out = steps;
    if (t1 > steps.back().first) out.emplace_back(t1, steps.back().second);
    return out;
  }
  const double width = (t1 - t0) / static_cast<double>(buckets);
  size_t i = 0;
  for (size_t b = 0; b < buckets; ++b) {
    const double lo = t0 + width * static_cast<double>(b);
    const double hi = lo + width;
    double area = 0;
    while (i < steps.size()) {
      const double start = std::max(steps[i].first, lo);
      const double end = std::min(i + 1 < steps.size() ? steps[i + 1].first : t1, hi);
      if (end > start) area += steps[i].second * (end - start);
      if (i + 1 < steps.size() && steps[i + 1].first <= hi) {
        ++i;
      } else {
        break;
      }
    }
    out.emplace_back(lo, area / width);
  }
  out.emplace_back(t1, out.back().second);
  return out;
}

double Hours(Millis t, Millis origin) { return static_cast<double>((t - origin).value()) / 3'600'000.0; }

}  // namespace

std::string SvgPlot(const PlotSpec& spec) {
  double x_lo = INFINITY, x_hi = -INFINITY, y_hi = 0;
  for (const PlotSeries& s : spec.series) {
    for (const auto& [x, y] : s.points) {
      if (spec.log_x && x <= 0) continue;
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_hi = std::max(y_hi, y);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (spec.log_x) {
    x_lo = std::pow(10.0, std::floor(std::log10(x_lo)));
    x_hi = std::pow(10.0, std::ceil(std::log10(x_hi)));
  }
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  if (spec.y_max) y_hi = *spec.y_max;
  const auto y_ticks = NiceTicks(0, y_hi > 0 ? y_hi * 1.05 : 1, 5);
  const double y_top = std::max(y_ticks.back(), y_hi > 0 ? y_hi : 1.0);
  const double pw = kWidth - kLeft - kRight;
  const double ph = kHeight - kTop - kBottom;
  auto px = [&](double x) {
    const double f = spec.log_x ? (std::log10(std::max(x, x_lo)) - std::log10(x_lo)) / (std::log10(x_hi) - std::log10(x_lo))
                                : (x - x_lo) / (x_hi - x_lo);
    return kLeft + f * pw;
  };
  auto py = [&](double y) { return kTop + ph - (y / y_top) * ph; };
  std::string svg = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" font-family="sans-serif" font-size="11">)"
      "\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
      kWidth, kHeight, kWidth, kHeight, kLeft, Esc(spec.title));
  for (double t : y_ticks) {
    if (t > y_top + 1e-9) continue;
    svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e5e5e5"/>)"
                       R"(<text x="{:.1f}" y="{:.1f}" text-anchor="end">{}</text>)" "\n",
                       kLeft, py(t), kLeft + pw, py(t), kLeft - 6, py(t) + 4, Num(t));
  }
  std::vector<double> x_ticks;
  if (spec.log_x) {
    for (double t = x_lo; t <= x_hi * 1.0001; t *= 10) x_ticks.push_back(t);
  } else {
    x_ticks = NiceTicks(x_lo, x_hi, 8);
  }
  for (double t : x_ticks) {
    svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e5e5e5"/>)"
                       R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)" "\n",
                       px(t), kTop, px(t), kTop + ph, px(t), kTop + ph + 16, Num(t));
  }
  svg += fmt::format(R"(<rect x="{}" y="{}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#444"/>)" "\n", kLeft, kTop, pw, ph);
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)" "\n", kLeft + pw / 2, kHeight - 10,
                     Esc(spec.x_label));
  svg += fmt::format(R"svg(<text transform="translate(16 {:.1f}) rotate(-90)" text-anchor="middle">{}</text>)svg" "\n", kTop + ph / 2,
                     Esc(spec.y_label));
  std::string legend = fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="146" height="{:.1f}" fill="white" fill-opacity="0.85" stroke="#ccc"/>)" "\n",
                                    kLeft + pw - 156, kTop + 4, 16.0 * static_cast<double>(spec.series.size()) + 6);
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& s = spec.series[i];
    const char* colour = kColours[i % std::size(kColours)];
    std::string path;
    for (const auto& [x, y] : s.points) {
      if (spec.log_x && x <= 0) continue;
      if (path.empty()) {
        path = fmt::format("M{:.1f},{:.1f}", px(x), py(y));
      } else if (s.step) {
        path += fmt::format(" H{:.1f} V{:.1f}", px(x), py(y));
      } else {
        path += fmt::format(" L{:.1f},{:.1f}", px(x), py(y));
      }
    }
    svg += fmt::format(R"(<path d="{}" fill="none" stroke="{}" stroke-width="1.5"/>)" "\n", path, colour);
    const double ly = kTop + 14 + 16 * static_cast<double>(i);
    legend += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="3"/>)"
                       R"(<text x="{:.1f}" y="{:.1f}">{}</text>)" "\n",
                       kLeft + pw - 150, ly, kLeft + pw - 130, ly, colour, kLeft + pw - 124, ly + 4, Esc(s.name));
  }
  svg += legend + "</svg>\n";
  return svg;
}

PlotSeries QueueSeries(const SimReport& r, size_t buckets) {
  PlotSeries s{.name = r.policy, .points = {}, .step = true};
  if (r.timeline.empty()) return s;
  const Millis origin = r.timeline.front().t;
  std::vector<std::pair<double, double>> steps;
  for (const TimelinePoint& p : r.timeline) steps.emplace_back(Hours(p.t, origin), p.queued);
  s.points = Bucketed(steps, steps.back().first, buckets);
  return s;
}

PlotSeries UtilisationSeries(const SimReport& r, size_t buckets) {
  PlotSeries s{.name = r.policy, .points = {}, .step = true};
  if (r.timeline.empty() || r.total_gpus <= 0) return s;
  const Millis origin = r.timeline.front().t;
  std::vector<std::pair<double, double>> steps;
  for (const TimelinePoint& p : r.timeline) {
    steps.emplace_back(Hours(p.t, origin), 100.0 * p.busy_gpus / static_cast<double>(r.total_gpus));
  }
  s.points = Bucketed(steps, steps.back().first, buckets);
  return s;
}

PlotSeries JctCdfSeries(const SimReport& r, size_t points) {
  PlotSeries s{.name = r.policy, .points = {}, .step = true};
  std::vector<double> jct;
  for (const SimJobResult& j : r.per_job) {
    if (j.outcome == Outcome::kPlaced && j.finish.value() >= 0) jct.push_back(std::max(1e-4, Hours(j.finish, j.submit)));
  }
  std::sort(jct.begin(), jct.end());
  if (jct.empty()) return s;
  const size_t n = jct.size();
  const size_t stride = std::max<size_t>(1, n / points);
  for (size_t i = 0; i < n; i += stride) s.points.emplace_back(jct[i], 100.0 * static_cast<double>(i + 1) / static_cast<double>(n));
  s.points.emplace_back(jct.back(), 100.0);
  return s;
}

PlotSpec NodesPlot(const SimReport& r, size_t buckets) {
  PlotSpec p{.title = "Nodes held, by offer", .x_label = "hours since the first job", .y_label = "nodes (booting or up)", .series = {}};
  if (!r.autoscale || r.autoscale->nodes.empty() || r.timeline.empty()) return p;
  const AutoscaleResult& a = *r.autoscale;
  const Millis origin = r.timeline.front().t;
  const double end = Hours(r.timeline.back().t, origin);
  for (size_t o = 0; o < a.offers.size(); ++o) {
    bool any = false;
    std::vector<std::pair<double, double>> steps;
    for (const OfferNodesPoint& pt : a.nodes) {
      any = any || pt.nodes[o] > 0;
      steps.emplace_back(Hours(pt.t, origin), pt.nodes[o]);
    }
    if (any) p.series.push_back(PlotSeries{.name = a.offers[o], .points = Bucketed(steps, end, buckets), .step = true});
  }
  return p;
}

PlotSpec TenantSharePlot(const SimReport& r) {
  PlotSpec p{.title = "Share of GPU-time by tenant (per window)", .x_label = "hours since the first job", .y_label = "% of GPU-time",
             .series = {}, .log_x = false, .y_max = 100.0};
  if (r.tenants.empty() || r.tenant_shares.empty()) return p;
  std::vector<size_t> order(r.tenants.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(r.tenants[b].gpu_hours, a) < std::tie(r.tenants[a].gpu_hours, b);
  });
  const Millis origin = r.timeline.empty() ? r.tenant_shares.front().t : r.timeline.front().t;
  const size_t shown = std::min<size_t>(8, order.size());
  for (size_t s = 0; s <= shown; ++s) {
    if (s == shown && shown == order.size()) break;  // no others
    PlotSeries series{.name = s < shown ? (r.tenants[order[s]].name.empty() ? "-" : r.tenants[order[s]].name) : "others", .points = {},
                      .step = true};
    for (const TenantSharePoint& pt : r.tenant_shares) {
      double share = 0;
      if (s < shown) {
        share = pt.shares[order[s]];
      } else {
        for (size_t k = shown; k < order.size(); ++k) share += pt.shares[order[k]];
      }
      series.points.emplace_back(Hours(pt.t, origin), 100.0 * share);
    }
    p.series.push_back(std::move(series));
  }
  return p;
}

PlotSpec CapacityPlot(const SimReport& r, const std::vector<std::pair<std::string, double>>& static_gpus, size_t buckets) {
  PlotSpec p{.title = "GPUs held and GPUs busy", .x_label = "hours since the first job", .y_label = "GPUs", .series = {}};
  if (r.timeline.empty()) return p;
  const Millis origin = r.timeline.front().t;
  const double end = Hours(r.timeline.back().t, origin);
  if (r.autoscale) {
    std::vector<std::pair<double, double>> steps;
    for (const OfferNodesPoint& pt : r.autoscale->nodes) {
      double held = 0;
      for (size_t o = 0; o < pt.nodes.size() && o < r.autoscale->offer_gpus.size(); ++o) held += pt.nodes[o] * r.autoscale->offer_gpus[o];
      steps.emplace_back(Hours(pt.t, origin), held);
    }
    p.series.push_back(PlotSeries{.name = "held (autoscaled)", .points = Bucketed(steps, end, buckets), .step = true});
  }
  std::vector<std::pair<double, double>> busy;
  for (const TimelinePoint& pt : r.timeline) busy.emplace_back(Hours(pt.t, origin), pt.busy_gpus);
  p.series.push_back(PlotSeries{.name = "busy", .points = Bucketed(busy, end, buckets), .step = true});
  for (const auto& [name, gpus] : static_gpus) {
    p.series.push_back(PlotSeries{.name = name, .points = {{0.0, gpus}, {end, gpus}}, .step = true});
  }
  return p;
}

PlotSpec QueuePlot(const std::vector<const SimReport*>& reports) {
  PlotSpec p{.title = "Queue length", .x_label = "hours since the first job", .y_label = "jobs waiting", .series = {}};
  for (const SimReport* r : reports) p.series.push_back(QueueSeries(*r));
  return p;
}

PlotSpec UtilisationPlot(const std::vector<const SimReport*>& reports) {
  PlotSpec p{.title = "GPU utilisation", .x_label = "hours since the first job", .y_label = "% of GPUs busy", .series = {},
             .log_x = false, .y_max = 100.0};
  for (const SimReport* r : reports) p.series.push_back(UtilisationSeries(*r));
  return p;
}

PlotSpec JctPlot(const std::vector<const SimReport*>& reports) {
  PlotSpec p{.title = "Job completion time (CDF)", .x_label = "JCT, hours (log scale)", .y_label = "% of jobs done within",
             .series = {}, .log_x = true, .y_max = 100.0};
  for (const SimReport* r : reports) p.series.push_back(JctCdfSeries(*r));
  return p;
}

std::string ComparisonHtml(const std::vector<const SimReport*>& reports, const std::string& trace, const std::string& fleet) {
  std::string html = fmt::format(
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gpupool sim: {}</title>\n"
      "<style>body{{font:14px sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}"
      "td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f3f3f3}}td:first-child{{text-align:left}}"
      "</style></head><body>\n<h1>Policies compared</h1>\n<p>trace <code>{}</code>, fleet <code>{}</code></p>\n<table>\n"
      "<tr><th>policy</th><th>jobs</th><th>finished</th><th>avg JCT (h)</th><th>p50 JCT (h)</th><th>p99 JCT (h)</th>"
      "<th>avg queue (h)</th><th>makespan (h)</th><th>GPU util</th><th>cost ($)</th></tr>\n",
      Esc(trace), Esc(trace), Esc(fleet));
  for (const SimReport* r : reports) {
    html += fmt::format(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.1f}</td>"
        "<td>{:.1f}%</td><td>{:.0f}</td></tr>\n",
        Esc(r->policy), r->jobs, r->finished, r->avg_jct_s / 3600, r->p50_jct_s / 3600, r->p99_jct_s / 3600, r->avg_queue_s / 3600,
        r->makespan_s / 3600, r->gpu_utilization * 100, static_cast<double>(r->cost.value()) / 1e6);
  }
  html += "</table>\n";
  for (const PlotSpec& p : {QueuePlot(reports), UtilisationPlot(reports), JctPlot(reports)}) html += "<div>" + SvgPlot(p) + "</div>\n";
  html += "</body></html>\n";
  return html;
}

}  // namespace gp
