#include "worker/exec_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/limits.h"

namespace taskq {
namespace {

// Variables a child gets from the worker when the worker has them.
constexpr const char* kPassedByDefault[] = {"LANG", "LC_ALL", "TZ"};

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\n'; }

bool IsEnvName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// Names that would hand the child the worker's credentials.
bool IsForbiddenEnvName(absl::string_view name) {
  return absl::StartsWith(name, "TASKQ_") || name == "CREDENTIALS_DIRECTORY";
}

// The worker's value of `name`, if set.
const char* LookupEnv(char** environ, absl::string_view name) {
  if (environ == nullptr) return nullptr;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    if (entry.size() > name.size() && entry[name.size()] == '=' &&
        absl::StartsWith(entry, name)) {
      return *e + name.size() + 1;
    }
  }
  return nullptr;
}

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitCommandLine(absl::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\0') return absl::InvalidArgumentError("the command line contains a NUL byte");
    if (IsBlank(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      size_t end = line.find('\'', i + 1);
      if (end == absl::string_view::npos) {
        return absl::InvalidArgumentError("unterminated ' in the command line");
      }
      absl::StrAppend(&word, line.substr(i + 1, end - i - 1));
      i = end;
    } else if (c == '"') {
      for (++i;; ++i) {
        if (i >= line.size()) return absl::InvalidArgumentError("unterminated \" in the command line");
        if (line[i] == '"') break;
        if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == '"' || line[i + 1] == '\\')) {
          ++i;
        }
        word.push_back(line[i]);
      }
    } else if (c == '\\') {
      if (i + 1 >= line.size()) return absl::InvalidArgumentError("trailing \\ in the command line");
      word.push_back(line[++i]);
    } else {
      word.push_back(c);
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

absl::StatusOr<ExecCommand> ParseAllowExec(absl::string_view spec) {
  auto fail = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--allow-exec ", Quoted(spec), ": ", why,
                     " (write --allow-exec 'NAME=PROGRAM ARG...', e.g. 'wc=/usr/bin/wc -l')"));
  };
  absl::StatusOr<std::vector<std::string>> words = SplitCommandLine(spec);
  if (!words.ok()) return fail(words.status().message());
  if (words->empty()) return fail("empty");
  ExecCommand command;
  const std::string& first = (*words)[0];
  const size_t eq = first.find('=');
  if (eq == std::string::npos) {
    // The old form: one program, named by itself.
    if (words->size() > 1) return fail("a command line with arguments needs a name");
    command.name = first;
    command.argv = {first};
    command.legacy = true;
    return command;
  }
  command.name = first.substr(0, eq);
  if (absl::Status s = ValidateName("exec command", command.name); !s.ok()) {
    return fail(absl::StrCat(s.message(), "; a program path containing '=' needs a name"));
  }
  std::string program = first.substr(eq + 1);
  if (program.empty()) return fail("no program after '='");
  command.argv.push_back(std::move(program));
  command.argv.insert(command.argv.end(), words->begin() + 1, words->end());
  return command;
}

absl::StatusOr<std::vector<std::string>> ReadAllowExecFile(const std::string& path) {
  auto fail = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat("--allow-exec-file ", path, ": ", why));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("not a regular file");
  }
  if ((st.st_uid != ::geteuid() && st.st_uid != 0) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    ::close(fd);
    return fail(absl::StrCat("others may write it; it must be owned by this user or root and not "
                             "group- or world-writable (chmod go-w ", path, ")"));
  }
  constexpr size_t kMaxFileBytes = 1 << 20;
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 && text.size() <= kMaxFileBytes) {
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (n < 0) return fail(std::strerror(errno));
  if (text.size() > kMaxFileBytes) return fail("larger than 1 MiB");
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    lines.emplace_back(line);
  }
  return lines;
}

absl::StatusOr<ExecConfig> BuildExecConfig(const ExecOptions& options, char** environ) {
  ExecConfig config;
  std::vector<std::string> specs = options.allow;
  if (!options.allow_file.empty()) {
    absl::StatusOr<std::vector<std::string>> lines = ReadAllowExecFile(options.allow_file);
    if (!lines.ok()) return lines.status();
    specs.insert(specs.end(), lines->begin(), lines->end());
  }
  for (const std::string& spec : specs) {
    absl::StatusOr<ExecCommand> command = ParseAllowExec(spec);
    if (!command.ok()) return command.status();
    const std::string name = command->name;
    if (config.commands.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--allow-exec: the name ", Quoted(name), " is given twice"));
    }
    config.commands.emplace(name, *std::move(command));
  }
  for (const std::string& name : options.allow_args) {
    auto it = config.commands.find(name);
    if (it == config.commands.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--allow-exec-args ", Quoted(name),
                                                     ": no --allow-exec command has that name"));
    }
    it->second.task_args = true;
  }
  std::vector<std::string> names;
  for (const auto& [name, command] : config.commands) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const ExecCommand& command = config.commands.at(name);
    if (command.legacy) {
      config.warnings.push_back(absl::StrCat(
          "--allow-exec ", name, " is the old form: tasks run it as \"", name,
          "\" with no arguments of their own (write --allow-exec '", "NAME=", name,
          " ARG...' to fix its arguments, or add --allow-exec-args ", name,
          " to let tasks pass them; see docs/WORKER.md)"));
    }
    if (command.task_args) {
      config.warnings.push_back(absl::StrCat(
          "exec command ", Quoted(name), " takes arguments from tasks (--allow-exec-args): ",
          "anyone holding the master's token chooses its argv"));
    }
  }

  // The child's environment: PATH and the locale by default, then --exec-env.
  std::map<std::string, std::string> env;
  env["PATH"] = kDefaultExecPath;
  for (const char* name : kPassedByDefault) {
    if (const char* value = LookupEnv(environ, name)) env[name] = value;
  }
  for (const std::string& entry : options.env) {
    const size_t eq = entry.find('=');
    const std::string name = entry.substr(0, eq);
    if (!IsEnvName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--exec-env ", Quoted(entry), ": write NAME or NAME=VALUE"));
    }
    if (IsForbiddenEnvName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--exec-env ", name, ": TASKQ_* and CREDENTIALS_DIRECTORY are never given to exec "
          "children (they locate the worker's token)"));
    }
    if (eq != std::string::npos) {
      env[name] = entry.substr(eq + 1);
    } else if (const char* value = LookupEnv(environ, name)) {
      env[name] = value;
    } else {
      env.erase(name);  // asked to pass it, and the worker has none
    }
  }
  for (auto& [name, value] : env) config.env.push_back(absl::StrCat(name, "=", value));

  if (options.timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--exec-timeout must not be negative");
  }
  config.timeout = options.timeout;
  constexpr uint64_t kMaxMb = uint64_t{1} << 30;  // 1 PiB: beyond it, no limit at all
  if (options.rlimits.address_space_mb > kMaxMb || options.rlimits.file_size_mb > kMaxMb) {
    return absl::InvalidArgumentError(
        absl::StrCat("--exec-rlimit-as and --exec-rlimit-fsize must be at most ", kMaxMb, " MiB"));
  }
  config.rlimits = options.rlimits;
  config.cgroup = options.cgroup.empty() ? "auto" : options.cgroup;
  return config;
}

}  // namespace taskq
