// A small delimited-text parser (CSV, TSV) for traces and node lists: the caller reads the file
// and hands over its text; records come one a line as string_views into it, with 1-based line
// numbers for error messages. Handles a quoted field without embedded newlines. No I/O.
// Not thread-safe; one parser per text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace gp {

class DelimitedFile {
 public:
  // `path` names the source in messages; `text` is its content.
  DelimitedFile(std::string path, std::string text, char separator)
      : path_(std::move(path)), text_(std::move(text)), separator_(separator) {}

  // Reads the next non-blank line into `fields`; false at the end.
  bool Next(std::vector<std::string_view>& fields);
  int line() const { return line_; }
  const std::string& path() const { return path_; }
  char separator() const { return separator_; }

  // "path:line: message" as a parse error.
  Status ErrorAt(int line, const std::string& message) const;

 private:
  std::string path_;
  std::string text_;
  size_t pos_ = 0;
  int line_ = 0;
  char separator_ = ',';
};

// Column positions by header name; the error names the missing column.
class Header {
 public:
  explicit Header(const std::vector<std::string_view>& names);
  Result<size_t> Require(const DelimitedFile& f, std::string_view name) const;
  bool Has(std::string_view name) const;

 private:
  std::vector<std::string> names_;
};

// Field parsers: the message names the field and the text, e.g. "num_gpus: 'x' is not a whole number".
Result<int64_t> FieldInt(std::string_view name, std::string_view text);
Result<double> FieldNumber(std::string_view name, std::string_view text);

}  // namespace gp
