// The wire codec under hostile input: every case is refused with an error naming the field (or
// accepted as it should be), never a crash, a wrapped integer or undefined behaviour. Each case
// here was, before the codec checked it, a crash or a silent misreading (named in `was`).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "wire/codec.h"

namespace gp {
namespace {

struct Case {
  std::string what;
  std::string body;
  std::string error;  // a part of the expected error; empty: accepted
  std::string was;    // what happened before
};

void Expect(const Case& c, const Status& s) {
  if (c.error.empty()) {
    EXPECT_TRUE(s.ok()) << c.what << ": " << s.message();
  } else {
    EXPECT_FALSE(s.ok()) << c.what << " (was: " << c.was << ")";
    EXPECT_NE(s.message().find(c.error), std::string::npos) << c.what << ": " << s.message();
  }
}

template <typename T>
Status StatusOf(const Result<T>& r) {
  return r ? Status::Ok() : r.error();
}

TEST(CodecHostileTest, SubmitRequests) {
  const std::vector<Case> cases = {
      {"priority past INT64_MAX", R"({"command":["true"],"priority":18446744073709551615})", "field 'priority'",
       "stored as -1"},
      {"priority 2^63", R"({"command":["true"],"priority":9223372036854775808})", "field 'priority'", "wrapped"},
      {"gpus as a huge float", R"({"command":["true"],"gpus":6.7e47})", "field 'gpus': expected a whole number", ""},
      {"NUL inside the command", "{\"command\":[\"sh\",\"-c\",\"echo a\\u0000rm -rf x\"]}", "NUL",
       "shown whole but run truncated"},
      {"NUL in an environment value", "{\"command\":[\"true\"],\"env\":{\"A\":\"x\\u0000y\"}}", "NUL", ""},
      {"an environment name with '='", R"({"command":["true"],"env":{"A=B":"x"}})", "without '='", ""},
      {"an empty environment name", R"({"command":["true"],"env":{"":"x"}})", "non-empty", ""},
      {"a name with a terminal escape", "{\"command\":[\"true\"],\"name\":\"\\u001b[2Jboo\"}", "control character", ""},
      {"nested 10,000 deep", std::string(10'000, '[') + std::string(10'000, ']'), "nested deeper", ""},
      {"not UTF-8 in a string", "{\"command\":[\"\xff\"]}", "not UTF-8", ""},
      {"an ordinary job", R"({"command":["sh","-c","echo hi"],"gpus":2,"priority":5,"env":{"A":"1"}})", "", ""},
  };
  for (const Case& c : cases) Expect(c, StatusOf(ParseSubmitRequest(c.body)));
}

// The driver and an oci job's container: refused naming the field when they do not go
// together; kept through the store and the launch.
TEST(CodecDriverTest, ContainerFieldsGoTogetherAndRoundTrip) {
  const std::vector<Case> cases = {
      {"an unknown driver", R"({"command":["true"],"driver":"docker","rootfs":"/r"})", "field 'driver'", ""},
      {"oci without a root", R"({"command":["true"],"driver":"oci"})", "field 'rootfs'", ""},
      {"oci with both roots", R"({"command":["true"],"driver":"oci","rootfs":"/r","image":"x"})", "field 'rootfs'", ""},
      {"a relative rootfs", R"({"command":["true"],"driver":"oci","rootfs":"r"})", "absolute path", ""},
      {"a rootfs that climbs", R"({"command":["true"],"driver":"oci","rootfs":"/r/../etc"})", "'..'", ""},
      {"a rootfs for a process job", R"({"command":["true"],"rootfs":"/r"})", "field 'rootfs': only for driver", ""},
      {"read_only_root for a process job", R"({"command":["true"],"read_only_root":true})", "field 'read_only_root'", ""},
      {"an oci job", R"({"command":["true"],"driver":"oci","image":"reg/app:1","read_only_root":true})", "", ""},
      {"a process job", R"({"command":["true"],"driver":"process"})", "", ""},
  };
  for (const Case& c : cases) Expect(c, StatusOf(ParseSubmitRequest(c.body)));

  auto r = ParseSubmitRequest(R"({"command":["true"],"driver":"oci","rootfs":"/srv/root","read_only_root":true})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->spec.driver, Driver::kOci);
  ASSERT_TRUE(r->extras && r->extras->container);
  EXPECT_EQ(r->extras->container->rootfs, "/srv/root");
  auto back = JobFromJson(JobToJson(*r, std::nullopt, /*store=*/true));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->spec.driver, Driver::kOci);
  ASSERT_TRUE(back->extras && back->extras->container);
  EXPECT_EQ(back->extras->container->rootfs, "/srv/root");
  EXPECT_TRUE(back->extras->container->read_only);
  auto plain = ParseSubmitRequest(R"({"command":["true"]})");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->extras) << "a process job without secrets boxes nothing";
  EXPECT_EQ(JobToJson(*plain, std::nullopt, false).find("driver"), std::string::npos);

  HeartbeatReply reply;
  reply.start.push_back(TaskLaunch{.job = 1, .command = {"true"}, .driver = "oci", .image = "reg/app:1", .read_only_root = true});
  auto parsed = ParseReply(ReplyToJson(reply));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->start[0].driver, "oci");
  EXPECT_EQ(parsed->start[0].image, "reg/app:1");
  EXPECT_TRUE(parsed->start[0].read_only_root);
  auto reg = ParseRegister(R"({"name":"n1","drivers":["process","oci"]})");
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->drivers.size(), 2u);
  EXPECT_FALSE(ParseRegister(R"({"name":"n1","drivers":["lxc"]})"));
}

// A priority by a class's name, resolved by the pool; a number stays a number; an unknown name
// and a pool without classes are refused naming the field.
TEST(CodecHostileTest, PriorityByClassName) {
  const PriorityResolver classes = [](std::string_view name) -> Result<int> {
    if (name == "high") return 1000;
    return Error(StatusCode::kInvalidArgument, "unknown priority class '" + std::string(name) + "'; known: high");
  };
  auto named = ParseSubmitRequest(R"({"command": ["true"], "priority": "high"})", classes);
  ASSERT_TRUE(named) << named.error().message();
  EXPECT_EQ(named->spec.priority, 1000);
  auto number = ParseSubmitRequest(R"({"command": ["true"], "priority": 7})", classes);
  ASSERT_TRUE(number);
  EXPECT_EQ(number->spec.priority, 7);
  auto unknown = ParseSubmitRequest(R"({"command": ["true"], "priority": "urgent"})", classes);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().message(), "field 'priority': unknown priority class 'urgent'; known: high");
  auto none = ParseSubmitRequest(R"({"command": ["true"], "priority": "high"})");
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("this pool has no priority classes"), std::string::npos) << none.error().message();
}

TEST(CodecHostileTest, ManyKeysParseInLinearTime) {
  // 95,000 keys in a 1 MiB object: an ordered JSON object made this quadratic (seconds on the
  // server's one loop). Refused at once for its first unknown field.
  std::string body = R"({"command":["true"])";
  for (int i = 0; i < 95'000; ++i) body += ",\"k" + std::to_string(i) + "\":1";
  body += "}";
  const Status s = StatusOf(ParseSubmitRequest(body));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unknown field"), std::string::npos) << s.message();
}

TEST(CodecHostileTest, JournalRecords) {
  const std::vector<Case> cases = {
      {"job id not a number", R"({"id":"abc","state":"queued"})", "field 'id'", "std::stoull threw out of the server's start"},
      {"job id with trailing text", R"({"id":"12x","state":"queued"})", "field 'id'", ""},
      {"exit code past int", R"({"id":"1","state":"failed","exit_code":4294967296})", "field 'exit_code'", "get<int> wrapped"},
      {"placement not an array", R"({"id":"1","state":"running","placement":5})", "field 'placement'", ""},
      {"attempts of strings", R"({"id":"1","state":"queued","attempts":["x"]})", "expected inside an object", ""},
      {"data not an object", R"({"id":"1","state":"queued","data":3})", "field 'data'", ""},
  };
  for (const Case& c : cases) Expect(c, StatusOf(JobFromJson(c.body)));
  // What the journal already holds loads as it was, even what a submit now refuses: a server
  // must start on its old store.
  auto old = JobFromJson("{\"id\":\"3\",\"state\":\"queued\",\"command\":[\"a\\u0000b\"],\"env\":{\"A=B\":\"x\"}}");
  ASSERT_TRUE(old) << old.error().message();
  EXPECT_EQ(old->command.at(0), std::string("a\0b", 3));
  const std::vector<Case> nodes = {
      {"node without gpus", R"({"name":"n1"})", "", "read a missing key: undefined behaviour"},
      {"gpus not an array", R"({"name":"n1","gpus":{}})", "field 'gpus'", ""},
  };
  for (const Case& c : nodes) Expect(c, StatusOf(NodeFromJson(c.body)));
}

TEST(CodecHostileTest, AgentMessages) {
  const std::vector<Case> heartbeats = {
      {"running with a float", R"({"node":"a","running":[[1,0,6.7e47]]})", "running[][2]", "float-to-int overflow"},
      {"running with strings", R"({"node":"a","running":[["1","0","1"]]})", "running[][0]", "threw a type error"},
      {"an XID past int", R"({"node":"a","gpus":[{"index":0,"xids":[4294967375]}]})", "xids", "quarantined as XID 79"},
      {"tasks not an array", R"({"node":"a","tasks":{}})", "field 'tasks'", ""},
      {"output not base64", R"({"node":"a","tasks":[{"job":1,"task":0,"attempt":1,"state":"running","stdout_b64":"@@@@"}]})",
       "stdout_b64", ""},
      {"an ordinary heartbeat", R"({"node":"a","tasks":[{"job":1,"task":0,"attempt":1,"state":"running","stdout_b64":"aGk="}]})", "", ""},
  };
  for (const Case& c : heartbeats) Expect(c, StatusOf(ParseHeartbeat(c.body)));
  const std::vector<Case> replies = {
      {"a cancel of 6.7e47", R"({"cancel":[[6.7e47,0,1]]})", "cancel[][0]", "float-to-int overflow"},
      {"a grace past a day", R"({"cancel":[[1,0,1,999999999999]]})", "cancel[][3]", ""},
  };
  for (const Case& c : replies) Expect(c, StatusOf(ParseReply(c.body)));
  const std::vector<Case> registers = {
      {"a GPU of 2^63 MiB", R"({"name":"big","gpus":[{"index":0,"memory_mib":9223372036854775807}]})", "more than any GPU",
       "accepted and given jobs"},
      {"a name with an escape sequence", "{\"name\":\"\\u001b]0;pwned\\u0007\"}", "field 'name'", "printed raw by `gpupool nodes`"},
      {"a name with a slash", R"({"name":"../x"})", "field 'name'", ""},
      {"a million CPU cores", R"({"name":"n","cpu_cores":1000000})", "field 'cpu_cores'", ""},
      {"an ordinary node", R"({"name":"gpu-01.dc","gpus":[{"index":0,"memory_mib":81920,"name":"NVIDIA H100"}]})", "", ""},
  };
  for (const Case& c : registers) Expect(c, StatusOf(ParseRegister(c.body)));
}

TEST(CodecHostileTest, OutputOfAnyBytesRoundTrips) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  bytes += "\xff\xfe not UTF-8 \x1b[2J";
  Heartbeat h{.node = "a", .tasks = {{.job = 1, .task = 0, .attempt = 1, .stdout_chunk = bytes, .stderr_chunk = "e"}}};
  const std::string json = HeartbeatToJson(h);
  EXPECT_LT(json.size(), bytes.size() * 4 / 3 + 400) << "base64: 4/3 of the bytes, not JSON's 6x escapes";
  auto back = ParseHeartbeat(json);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->tasks.at(0).stdout_chunk, bytes) << "every byte arrives as it was written";
  for (size_t n = 0; n < 7; ++n) EXPECT_EQ(Base64Decode(Base64Encode(bytes.substr(0, n))), bytes.substr(0, n));
}

TEST(CodecHostileTest, ErrorTextOfAnyBytesIsJson) {
  // The error text quotes what a client sent; invalid UTF-8 once made the dump throw.
  const std::string json = ErrorJson("no job '\xff\xfe'");
  EXPECT_NE(json.find("no job"), std::string::npos);
}

// The messages written at fleet rates (job rows, launches, heartbeats) are written as text
// directly: whatever text a field holds, the result is JSON that reads back to the same
// values, with U+FFFD for bytes that are not UTF-8 (as the value tree's dump wrote them), and
// an environment's name given twice appears once with its last value.
TEST(CodecWriterTest, AnyTextReadsBackAndAnEnvironmentNameAppearsOnce) {
  struct Text {
    std::string in;
    std::string back;  // what reading it gives
  };
  const std::vector<Text> texts = {
      {"", ""},
      {"plain", "plain"},
      {"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80", "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"},
      {"quote\" back\\slash /", "quote\" back\\slash /"},
      {std::string("nul\0byte", 8), std::string("nul\0byte", 8)},
      {"ctl\x01\x1f\x7f\t\n", "ctl\x01\x1f\x7f\t\n"},
      {"bad \xff end", "bad \xef\xbf\xbd end"},
      {"cut \xe2\x9c", "cut \xef\xbf\xbd"},
      {"surrogate \xed\xa0\x80", "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"overlong \xc0\x80", "overlong \xef\xbf\xbd\xef\xbf\xbd"},
  };
  for (const Text& t : texts) {
    JobRecord r;
    r.spec.id = JobId{42};
    r.spec.name = t.in;
    r.command = {"sh", t.in};
    r.env = {{"A", "1"}, {"B", t.in}, {"A", "2"}};
    r.tasks.push_back(TaskRecord{.node = "n1", .exit_code = 3});
    const std::string json = JobToJson(r, t.in);
    const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << json;
    EXPECT_EQ(j["name"], t.back) << json;
    EXPECT_EQ(j["message"], t.back) << json;
    EXPECT_EQ(j["command"][1], t.back) << json;
    EXPECT_EQ(j["env"].size(), 2u) << json;
    EXPECT_EQ(j["env"]["A"], "2") << "the last assignment wins: " << json;
    EXPECT_LT(json.find("\"A\""), json.find("\"B\"")) << "where it first appeared: " << json;
    EXPECT_EQ(j["placement"][0]["exit_code"], 3);
    EXPECT_TRUE(j["placement"][0]["signal"].is_null());
    auto back = JobFromJson(json);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->spec.name, t.back);
    EXPECT_EQ(JobToJson(*back, t.back), JobToJson(*back)) << "the message given is the one written";

    HeartbeatReply reply{.start = {TaskLaunch{.job = 7, .task = 1, .attempt = 2, .command = {t.in}, .env = r.env, .workdir = t.in}},
                         .cancel = {TaskKey{8, 0, 1}, TaskKey{9, 1, 3}}};
    reply.grace_ms[TaskKey{9, 1, 3}] = 500;
    auto rb = ParseReply(ReplyToJson(reply));
    ASSERT_TRUE(rb) << rb.error().message();
    ASSERT_EQ(rb->start.size(), 1u);
    EXPECT_EQ(rb->start[0].command, std::vector<std::string>{t.back});
    EXPECT_EQ(rb->start[0].workdir, t.back);
    EXPECT_EQ(rb->start[0].env, (std::vector<std::pair<std::string, std::string>>{{"A", "2"}, {"B", t.back}}));
    EXPECT_EQ(rb->cancel, reply.cancel);
    EXPECT_EQ(rb->grace_ms, reply.grace_ms);

    Heartbeat hb{.node = "n1", .telemetry = true, .host = HostSample{.cpu_cores = 64},
                 .gpus = {GpuSample{.index = 1, .utilisation = PerMille{950}, .temperature_c = 71, .xids = {79}}},
                 .tasks = {TaskReport{.job = 7, .task = 1, .attempt = 2, .state = TaskReport::State::kExited, .exit_code = 0,
                                      .error = t.in}},
                 .running = {TaskKey{7, 0, 2}}};
    auto hbb = ParseHeartbeat(HeartbeatToJson(hb));
    ASSERT_TRUE(hbb) << hbb.error().message();
    EXPECT_EQ(hbb->host.cpu_cores, 64);
    ASSERT_EQ(hbb->gpus.size(), 1u);
    EXPECT_EQ(hbb->gpus[0].temperature_c, 71);
    EXPECT_EQ(hbb->gpus[0].xids, std::vector<int>{79});
    ASSERT_EQ(hbb->tasks.size(), 1u);
    EXPECT_EQ(hbb->tasks[0].error, t.back);
    EXPECT_EQ(hbb->tasks[0].exit_code, 0);
    EXPECT_EQ(hbb->running, hb.running);
  }
}

// An array's record and an element's keep what recovery needs (the spec, how far it was
// expanded, what was cancelled before expansion, the element's array and index); a bad
// array spec in a submission names the field.
TEST(CodecArraysTest, RecordsRoundTripAndBadSpecsNameTheField) {
  auto req = ParseSubmitRequest(R"({"command": ["true"], "gpus": 1, "array": "0-99:3%4"})");
  ASSERT_TRUE(req) << req.error().message();
  ASSERT_TRUE(req->array);
  EXPECT_EQ(req->array->size(), 34);
  JobRecord a = *req;
  a.spec.id = JobId{7};
  a.arr().expanded = 10;
  a.arr().skipped = 2;
  a.arr().early_cancel = {20, 33};
  auto back = JobFromJson(JobToJson(a));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back->array, *a.array);
  EXPECT_EQ(back->arr().expanded, 10);
  EXPECT_EQ(back->arr().skipped, 2);
  EXPECT_EQ(back->arr().early_cancel, a.arr().early_cancel);
  JobRecord e;
  e.command = {"true"};
  e.spec.id = JobId{9};
  e.array_of = 7;
  e.array_index = 3;
  auto eb = JobFromJson(JobToJson(e));
  ASSERT_TRUE(eb) << eb.error().message();
  EXPECT_EQ(eb->array_of, 7u);
  EXPECT_EQ(eb->array_index, 3);
  for (const char* bad : {R"({"command": ["true"], "array": "9-1"})", R"({"command": ["true"], "array": 5})",
                          R"({"command": ["true"], "array": "0-9%0"})"}) {
    auto r = ParseSubmitRequest(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("'array'"), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace gp
