// Plots of simulation reports as SVG text, and a comparison page (HTML) for several policies:
// queue length and GPU utilisation over time, and the distribution (CDF) of job completion
// times. Pure functions of their input; deterministic (the same reports give the same bytes).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sim/engine.h"

namespace gp {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
  bool step = true;                               // a value holds until the next point
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  bool log_x = false;
  std::optional<double> y_max;  // else from the data
};

std::string SvgPlot(const PlotSpec& spec);

// Series from a report, at most `buckets` points each (time-weighted means per bucket).
PlotSeries QueueSeries(const SimReport& r, size_t buckets = 1000);        // x: hours since the first event
PlotSeries UtilisationSeries(const SimReport& r, size_t buckets = 1000);  // y: % of the fleet's GPUs busy
PlotSeries JctCdfSeries(const SimReport& r, size_t points = 500);         // x: JCT in hours (log), y: % of jobs

// The three plots for the given reports (one series per report).
PlotSpec QueuePlot(const std::vector<const SimReport*>& reports);
PlotSpec UtilisationPlot(const std::vector<const SimReport*>& reports);
PlotSpec JctPlot(const std::vector<const SimReport*>& reports);

// Under autoscaling: nodes held of each offer over time (one series per offer that held any);
// and GPUs held against GPUs busy, with flat lines for the static fleets given (name, GPUs).
PlotSpec NodesPlot(const SimReport& r, size_t buckets = 1000);
// Each tenant's share of the GPU-time jobs ran, window by window (the 8 tenants with the most
// GPU-hours; the rest together as "others").
PlotSpec TenantSharePlot(const SimReport& r);
PlotSpec CapacityPlot(const SimReport& r, const std::vector<std::pair<std::string, double>>& static_gpus, size_t buckets = 1000);

// A page comparing policies: a table of the headline numbers and the three plots (inline).
std::string ComparisonHtml(const std::vector<const SimReport*>& reports, const std::string& trace, const std::string& fleet);

}  // namespace gp
