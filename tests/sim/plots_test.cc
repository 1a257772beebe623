// Simulation plots: the timeline of the hand-worked scene, the series drawn from it, and the
// SVG and HTML built from them (deterministic, one line per series, values where they belong).
#include <gtest/gtest.h>

#include "adapters/fleet_loader.h"
#include "sim/engine.h"
#include "sim/plots.h"

namespace gp {
namespace {

TraceJob Job(const char* name, double submit_s, double duration_s, int gpus) {
  return TraceJob{.name = name, .submit = Millis{static_cast<int64_t>(submit_s * 1000)},
                  .duration = Millis{static_cast<int64_t>(duration_s * 1000)}, .gpus = gpus};
}

// One 4-GPU node. A (t=0, 2 GPUs, 100 s) runs at once; B (t=0, 4 GPUs, 50 s) waits until 100.
//   queued: 1 over [0, 100), 0 after; busy GPUs: 2 over [0, 100), 4 over [100, 150), 0 at 150.
SimReport Scene(const std::string& policy) {
  const Fleet fleet = *ParseFleetShorthand("1x4xV100");
  const Trace trace{.jobs = {Job("A", 0, 100, 2), Job("B", 0, 50, 4)}};
  return *RunSimulation(fleet, trace, *BuiltinRegistry().MakePolicy(policy), {});
}

TEST(PlotsTest, TimelineFollowsTheScene) {
  const SimReport r = Scene("fifo");
  ASSERT_EQ(r.total_gpus, 4);
  std::vector<std::tuple<int64_t, int, double>> got;
  for (const TimelinePoint& p : r.timeline) got.emplace_back(p.t.value(), p.queued, p.busy_gpus);
  const std::vector<std::tuple<int64_t, int, double>> want = {{0, 1, 2.0}, {100'000, 0, 4.0}, {150'000, 0, 0.0}};
  EXPECT_EQ(got, want);
}

TEST(PlotsTest, SeriesAreTimeWeightedMeans) {
  const SimReport r = Scene("fifo");
  // Two buckets over 150 s: [0, 75) all at 2 busy GPUs = 50 %; [75, 150): 25 s at 2 and 50 s at 4
  // = (50 + 200) / 75 = 3.33 GPUs = 83.3 %.
  const PlotSeries u = UtilisationSeries(r, 2);
  ASSERT_GE(u.points.size(), 2u);
  EXPECT_NEAR(u.points[0].second, 50.0, 1e-9);
  EXPECT_NEAR(u.points[1].second, 100.0 * (25.0 * 2 + 50.0 * 4) / 75.0 / 4.0, 1e-9);
  const PlotSeries q = QueueSeries(r, 2);
  EXPECT_NEAR(q.points[0].second, 1.0, 1e-9);
  EXPECT_NEAR(q.points[1].second, 25.0 / 75.0, 1e-9);
  const PlotSeries c = JctCdfSeries(r);
  ASSERT_FALSE(c.points.empty());
  EXPECT_NEAR(c.points.front().first, 100.0 / 3600, 1e-9) << "A, 100 s";
  EXPECT_NEAR(c.points.front().second, 50.0, 1e-9);
  EXPECT_NEAR(c.points.back().first, 150.0 / 3600, 1e-9) << "B, 150 s";
  EXPECT_DOUBLE_EQ(c.points.back().second, 100.0);
}

TEST(PlotsTest, SvgAndComparisonPageAreDeterministicWithALinePerPolicy) {
  const SimReport a = Scene("fifo");
  const SimReport b = Scene("sjf");
  const std::vector<const SimReport*> both = {&a, &b};
  const std::string svg = SvgPlot(JctPlot(both));
  EXPECT_EQ(svg, SvgPlot(JctPlot(both))) << "the same reports give the same bytes";
  EXPECT_TRUE(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  size_t paths = 0;
  for (size_t at = svg.find("<path "); at != std::string::npos; at = svg.find("<path ", at + 1)) ++paths;
  EXPECT_EQ(paths, 2u) << "one line per policy";
  EXPECT_NE(svg.find(">fifo<"), std::string::npos);
  EXPECT_NE(svg.find(">sjf<"), std::string::npos);
  const std::string html = ComparisonHtml(both, "t.csv", "1x4xV100");
  EXPECT_NE(html.find("<td>fifo</td>"), std::string::npos);
  size_t svgs = 0;
  for (size_t at = html.find("<svg "); at != std::string::npos; at = html.find("<svg ", at + 1)) ++svgs;
  EXPECT_EQ(svgs, 3u) << "queue, utilisation and JCT";
  const PlotSpec empty{.title = "nothing", .x_label = "x", .y_label = "y", .series = {}};
  EXPECT_TRUE(SvgPlot(empty).ends_with("</svg>\n")) << "no data still makes a valid picture";
}

}  // namespace
}  // namespace gp
