// Unit tests: the exec flags (--allow-exec command lines, the old form,
// --allow-exec-args, --exec-env) and what they refuse.
#include "worker/exec_config.h"

#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

using Words = std::vector<std::string>;

TEST(SplitCommandLine, WordsQuotesAndEscapes) {
  EXPECT_EQ(*SplitCommandLine("  /usr/bin/wc   -l\t-c "), (Words{"/usr/bin/wc", "-l", "-c"}));
  EXPECT_EQ(*SplitCommandLine(R"(sh -c 'echo "$HOME" \x')"), (Words{"sh", "-c", R"(echo "$HOME" \x)"}));
  EXPECT_EQ(*SplitCommandLine(R"(a "b \"c\" \\ \d" e\ f)"), (Words{"a", R"(b "c" \ \d)", "e f"}));
  EXPECT_EQ(*SplitCommandLine(R"(x''y "" '')"), (Words{"xy", "", ""}));
  EXPECT_EQ(*SplitCommandLine(""), Words{});
  EXPECT_FALSE(SplitCommandLine("sh -c 'open").ok());
  EXPECT_FALSE(SplitCommandLine("sh -c \"open").ok());
  EXPECT_FALSE(SplitCommandLine("trailing\\").ok());
  EXPECT_FALSE(SplitCommandLine(std::string("nul\0byte", 8)).ok());
}

TEST(ParseAllowExec, NameEqualsCommandLine) {
  absl::StatusOr<ExecCommand> c = ParseAllowExec("wc=/usr/bin/wc -l");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "wc");
  EXPECT_EQ(c->argv, (Words{"/usr/bin/wc", "-l"}));
  EXPECT_FALSE(c->legacy);
  EXPECT_FALSE(c->task_args);
  // docs/WORKER.md's quoting example.
  c = ParseAllowExec(R"(count=/bin/sh -c "wc -l | tr -d \" \"")");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->argv, (Words{"/bin/sh", "-c", R"(wc -l | tr -d " ")"}));
  c = ParseAllowExec(R"(my-tool="/opt/my tools/run" --mode=fast)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "my-tool");
  EXPECT_EQ(c->argv, (Words{"/opt/my tools/run", "--mode=fast"}));
}

TEST(ParseAllowExec, OldFormIsNamedByItsProgram) {
  absl::StatusOr<ExecCommand> c = ParseAllowExec("/usr/bin/wc");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "/usr/bin/wc");
  EXPECT_EQ(c->argv, Words{"/usr/bin/wc"});
  EXPECT_TRUE(c->legacy);
}

TEST(ParseAllowExec, RefusesWhatItCannotReadUnambiguously) {
  for (const char* bad : {"", "   ", "/usr/bin/wc -l", "=/bin/cat", "cat=", "a/b=/bin/cat",
                          "wc=/usr/bin/wc 'open"}) {
    absl::StatusOr<ExecCommand> c = ParseAllowExec(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(c.status().message(), "NAME=PROGRAM")) << c.status();
  }
}

char* kEnviron[] = {const_cast<char*>("PATH=/worker/path"), const_cast<char*>("LANG=C.UTF-8"),
                    const_cast<char*>("HOME=/home/worker"),
                    const_cast<char*>("TASKQ_TOKEN_FILE=/secret"),
                    const_cast<char*>("KEEP=kept"), nullptr};

TEST(BuildExecConfig, EnvironmentIsAnAllowList) {
  ExecOptions options;
  options.env = {"KEEP", "SET=v=1", "ABSENT"};
  absl::StatusOr<ExecConfig> config = BuildExecConfig(options, kEnviron);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->env, (Words{"KEEP=kept", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin",
                                "SET=v=1"}));
  options.env = {"PATH"};  // the worker's own PATH, on request
  config = BuildExecConfig(options, kEnviron);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->env, (Words{"LANG=C.UTF-8", "PATH=/worker/path"}));
}

TEST(BuildExecConfig, RefusesCredentialsAndBadNames) {
  for (const char* bad : {"TASKQ_TOKEN_FILE", "TASKQ_X=1", "CREDENTIALS_DIRECTORY", "1X", "A-B",
                          "=x", ""}) {
    ExecOptions options;
    options.env = {bad};
    absl::StatusOr<ExecConfig> config = BuildExecConfig(options, kEnviron);
    ASSERT_FALSE(config.ok()) << bad;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(config.status().message(), "--exec-env")) << config.status();
  }
}

TEST(BuildExecConfig, CommandsNamesAndTaskArguments) {
  ExecOptions options;
  options.allow = {"wc=/usr/bin/wc -l", "/bin/cat"};
  options.allow_args = {"/bin/cat"};
  absl::StatusOr<ExecConfig> config = BuildExecConfig(options, kEnviron);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->commands.size(), 2u);
  EXPECT_FALSE(config->commands.at("wc").task_args);
  EXPECT_TRUE(config->commands.at("/bin/cat").task_args);
  // The old form and the task arguments are both said at startup.
  ASSERT_EQ(config->warnings.size(), 2u);
  EXPECT_TRUE(absl::StrContains(config->warnings[0], "old form")) << config->warnings[0];
  EXPECT_TRUE(absl::StrContains(config->warnings[1], "takes arguments from tasks"));

  options.allow = {"wc=/usr/bin/wc", "wc=/usr/bin/wc -l"};
  options.allow_args = {};
  EXPECT_FALSE(BuildExecConfig(options, kEnviron).ok());  // a name twice
  options.allow = {"wc=/usr/bin/wc"};
  options.allow_args = {"cat"};
  absl::StatusOr<ExecConfig> unknown = BuildExecConfig(options, kEnviron);
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "--allow-exec-args")) << unknown.status();
}

TEST(BuildExecConfig, Limits) {
  ExecOptions options;
  options.timeout = absl::Seconds(-1);
  EXPECT_FALSE(BuildExecConfig(options, kEnviron).ok());
  options.timeout = absl::Seconds(5);
  options.rlimits.address_space_mb = uint64_t{1} << 40;
  EXPECT_FALSE(BuildExecConfig(options, kEnviron).ok());
  options.rlimits.address_space_mb = 512;
  absl::StatusOr<ExecConfig> config = BuildExecConfig(options, kEnviron);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->timeout, absl::Seconds(5));
  EXPECT_EQ(config->rlimits.address_space_mb, 512u);
}

TEST(BuildExecConfig, AllowExecFileAddsCommandsAndMustNotBeWritableByOthers) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/allow-exec-", ::getpid());
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("# commands for this worker\n\n  wc=/usr/bin/wc -l  \nfail=/bin/sh -c 'exit 3'\n", f);
  std::fclose(f);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ExecOptions options;
  options.allow = {"cat=/bin/cat"};
  options.allow_file = path;
  absl::StatusOr<ExecConfig> config = BuildExecConfig(options, kEnviron);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->commands.size(), 3u);
  EXPECT_EQ(config->commands.at("wc").argv, (Words{"/usr/bin/wc", "-l"}));
  EXPECT_EQ(config->commands.at("fail").argv, (Words{"/bin/sh", "-c", "exit 3"}));

  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  absl::StatusOr<ExecConfig> writable = BuildExecConfig(options, kEnviron);
  ASSERT_FALSE(writable.ok());
  EXPECT_EQ(writable.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(writable.status().message(), "chmod go-w")) << writable.status();
  std::remove(path.c_str());
  EXPECT_FALSE(BuildExecConfig(options, kEnviron).ok());  // missing
}

}  // namespace
}  // namespace taskq
