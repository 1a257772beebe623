// Parsing and printing of human quantities: "80GiB", "1.5TB", "100Gbps", "25Gbit/s", "35ms",
// "$2.10". Pure functions; the error text names what was expected so the caller can prefix it
// with the file, line and field.
#pragma once

#include <string>
#include <string_view>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// Bytes: B, KB/MB/GB/TB/PB (powers of 1000) and KiB/MiB/GiB/TiB/PiB (powers of 1024).
Result<Bytes> ParseBytes(std::string_view text);
// Memory in MiB, same suffixes as ParseBytes (rounded down to whole MiB).
Result<MiB> ParseMiB(std::string_view text);
// Bandwidth: bps, Kbps, Mbps, Gbps, Tbps (also "Gbit/s").
Result<BitsPerSecond> ParseBandwidth(std::string_view text);
// Durations: ms, s, m, h, d (e.g. "90s", "1.5h").
Result<Millis> ParseDuration(std::string_view text);
// A time limit as Slurm's --time spells it, or a duration: "MM", "MM:SS", "HH:MM:SS",
// "D-HH", "D-HH:MM", "D-HH:MM:SS" (a bare number is minutes, as in Slurm), or "2h", "90s".
// Errors say which forms are known.
Result<Millis> ParseTimeLimit(std::string_view text);
// A plain decimal number (no suffix).
Result<double> ParseNumber(std::string_view text);
// USD as a decimal ("2.10" or "$2.10") into micro-USD, rounded to nearest.
Result<MicroUsd> ParseUsd(std::string_view text);
MicroUsd UsdToMicro(double usd);

std::string FormatBytes(Bytes b);          // "100 GB"
std::string FormatMillis(Millis d);        // "1h02m03s", "80.0005s", "12ms"
std::string FormatUsd(MicroUsd m);         // "$2.10"

}  // namespace gp
