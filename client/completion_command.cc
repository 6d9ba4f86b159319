#include "client/completion_command.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace taskq::cli {
namespace {

// Long options whose value names a queue although their type does not say
// QUEUE.
const std::set<std::string> kQueueOptions = {"queue", "reply-to", "dead-letter"};

// What an option's value is, as the script's _taskq_value prints it: ""
// for a flag without a value, "file", "queue", "choices A B C", "value".
std::string ValueKind(const CLI::Option& opt) {
  if (opt.get_expected_max() == 0) return "";  // a flag
  const std::string type = opt.get_type_name();
  // CLI::IsMember adds "{a,b,c}" to the type name.
  if (auto open = type.find('{'); open != std::string::npos) {
    auto close = type.find('}', open);
    if (close != std::string::npos) {
      std::vector<std::string> choices =
          absl::StrSplit(type.substr(open + 1, close - open - 1), ',', absl::SkipEmpty());
      return absl::StrCat("choices ", absl::StrJoin(choices, " "));
    }
  }
  if (absl::StartsWith(type, "FILE") || absl::StartsWith(type, "PATH")) return "file";
  if (absl::StartsWith(type, "QUEUE")) return "queue";
  for (const std::string& name : opt.get_lnames()) {
    if (kQueueOptions.count(name) > 0) return "queue";
  }
  return "value";
}

// What the first positional argument of the verb at `path` is: "queue" if
// it names an existing queue, "choices ..." for a fixed set, else "".
std::string PositionalKind(const CLI::App& app, const std::string& path) {
  auto positionals =
      app.get_options([](const CLI::Option* o) { return o->get_positional(); });
  if (positionals.empty()) return "";
  const CLI::Option& first = *positionals.front();
  const std::string name = first.get_name();
  if (name == "QUEUE") return "queue";
  // `queue stats NAME` and its siblings name an existing queue; `queue
  // create NAME` a new one.
  if (name == "NAME" && absl::StartsWith(path, "queue ") && path != "queue create") return "queue";
  std::string kind = ValueKind(first);
  return absl::StartsWith(kind, "choices") ? kind : "";
}

struct Tables {
  std::map<std::string, std::vector<std::string>> verbs;   // path -> sub-verbs
  std::map<std::string, std::vector<std::string>> flags;   // path -> its own flags
  std::map<std::string, std::string> positional;           // path -> PositionalKind
  // "PATH|--flag" -> ValueKind: per verb, as `--lease` is a flag of `get`
  // but takes a value in `complete`.
  std::map<std::string, std::string> values;
};

void Walk(const CLI::App& app, const std::string& path, Tables* t) {
  const CLI::Option* help = app.get_help_ptr();
  for (const CLI::Option* opt :
       app.get_options([](const CLI::Option* o) { return o->nonpositional(); })) {
    // Every verb's --help is listed once, with the global flags.
    if (opt == help && !path.empty()) continue;
    const std::string kind = ValueKind(*opt);
    for (const std::string& l : opt->get_lnames()) {
      t->flags[path].push_back("--" + l);
      if (!kind.empty()) t->values[absl::StrCat(path, "|--", l)] = kind;
    }
    for (const std::string& s : opt->get_snames()) {
      t->flags[path].push_back("-" + s);
      if (!kind.empty()) t->values[absl::StrCat(path, "|-", s)] = kind;
    }
  }
  if (std::string kind = PositionalKind(app, path); !kind.empty()) t->positional[path] = kind;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    t->verbs[path].push_back(sub->get_name());
    Walk(*sub, path.empty() ? sub->get_name() : absl::StrCat(path, " ", sub->get_name()), t);
  }
}

// A bash `case` function: `name ARG` prints the value for ARG.
std::string CaseFunction(const std::string& name, const std::string& comment,
                         const std::map<std::string, std::string>& entries,
                         const std::string& subject = "$1") {
  std::string out =
      absl::StrCat("# ", comment, "\n", name, "() {\n  case \"", subject, "\" in\n");
  for (const auto& [key, value] : entries) {
    // Keys and values are verb and flag names of our own: no quotes in them.
    absl::StrAppend(&out, "    \"", key, "\") echo \"", value, "\" ;;\n");
  }
  absl::StrAppend(&out, "  esac\n}\n\n");
  return out;
}

std::map<std::string, std::string> Joined(
    const std::map<std::string, std::vector<std::string>>& lists) {
  std::map<std::string, std::string> out;
  for (const auto& [key, list] : lists) out[key] = absl::StrJoin(list, " ");
  return out;
}

// The part of the script that does not depend on the tables.
constexpr char kBody[] = R"bash(# What flag $2 takes on verb path $1, its own or a global one.
_taskq_value() {
  local kind
  kind="$(_taskq_value_at "$1" "$2")"
  [[ -z "$kind" ]] && kind="$(_taskq_value_at "" "$2")"
  echo "$kind"
}

# The taskq command line given on the line being completed, for
# `taskq queue list`: the connection flags and their values.
_taskq_queues() {
  local -a conn=()
  local i w
  for ((i = 1; i < ${#_taskq_words[@]}; i++)); do
    w="${_taskq_words[i]}"
    case "$w" in
      --master | --join | --token-file | --tls-ca | --tls-server-name)
        conn+=("$w" "${_taskq_words[i + 1]}") ;;
      --tls | --master=* | --join=* | --token-file=* | --tls-ca=* | --tls-server-name=*)
        conn+=("$w") ;;
    esac
  done
  local -a limit=()
  command -v timeout >/dev/null 2>&1 && limit=(timeout 3)
  "${limit[@]}" "${_taskq_words[0]}" queue list --retry-for 0 --connect-timeout 2 \
    "${conn[@]}" 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_taskq_complete_value() {
  local kind="$1" cur="$2"
  case "$kind" in
    file)
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur")) ;;
    queue) COMPREPLY=($(compgen -W "$(_taskq_queues)" -- "$cur")) ;;
    choices*) COMPREPLY=($(compgen -W "${kind#choices }" -- "$cur")) ;;
    *) COMPREPLY=() ;;
  esac
}

_taskq() {
  COMPREPLY=()
  local cur="${COMP_WORDS[COMP_CWORD]}" prev=""
  ((COMP_CWORD > 0)) && prev="${COMP_WORDS[COMP_CWORD - 1]}"
  # `--flag=VALUE`: bash splits at '=' (COMP_WORDBREAKS).
  if [[ "$prev" == "=" ]] && ((COMP_CWORD > 1)); then
    prev="${COMP_WORDS[COMP_CWORD - 2]}"
  elif [[ "$cur" == "=" ]]; then
    prev="${COMP_WORDS[COMP_CWORD - 1]}"
    cur=""
  fi
  # The words before the cursor, split at blanks only (COMP_WORDS also
  # splits HOST:PORT at ':').
  local line="${COMP_LINE:0:COMP_POINT}"
  local -a _taskq_words
  read -r -a _taskq_words <<<"$line"
  local n=${#_taskq_words[@]}
  [[ "$line" =~ [[:space:]]$ ]] || n=$((n - 1))  # the word being typed
  local path="" npos=0 skip=0 i w
  for ((i = 1; i < n; i++)); do
    w="${_taskq_words[i]}"
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      --) break ;;
      -*=*) continue ;;
      -*) [[ -n "$(_taskq_value "$path" "$w")" ]] && skip=1; continue ;;
    esac
    if [[ " $(_taskq_verbs "$path") " == *" $w "* ]]; then
      path="${path:+$path }$w"
    else
      npos=$((npos + 1))
    fi
  done
  local kind
  if [[ "$prev" == -* ]] && kind="$(_taskq_value "$path" "$prev")" && [[ -n "$kind" ]]; then
    _taskq_complete_value "$kind" "$cur"
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    local flags="$(_taskq_flags "")"
    [[ -n "$path" ]] && flags="$(_taskq_flags "$path") $flags"
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return 0
  fi
  local verbs="$(_taskq_verbs "$path")"
  if [[ -n "$verbs" ]]; then
    COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
  elif ((npos == 0)); then
    _taskq_complete_value "$(_taskq_positional "$path")" "$cur"
  fi
  return 0
}

complete -F _taskq taskq
)bash";

}  // namespace

std::string BashCompletionScript(const CLI::App& root) {
  Tables t;
  Walk(root, "", &t);
  std::string out =
      "# bash completion for taskq, generated by `taskq completion bash`.\n"
      "# Load it in the current shell:  source <(taskq completion bash)\n"
      "# or for every shell: taskq completion bash > "
      "~/.local/share/bash-completion/completions/taskq\n\n";
  out += CaseFunction("_taskq_verbs", "Sub-verbs of a verb path (\"\" = taskq itself).",
                      Joined(t.verbs));
  out += CaseFunction("_taskq_flags",
                      "A verb path's own flags (\"\": the global ones, valid everywhere).",
                      Joined(t.flags));
  out += CaseFunction("_taskq_value_at",
                      "What flag $2 of verb path $1 takes: file, queue, choices LIST, value; "
                      "nothing for a flag without a value.",
                      t.values, "$1|$2");
  out += CaseFunction("_taskq_positional",
                      "What a verb's first argument is: queue, choices LIST, or nothing.",
                      t.positional);
  out += kBody;
  return out;
}

void AddCompletionCommand(CLI::App& root, std::vector<Verb>* verbs) {
  CLI::App* completion =
      AddVerb(&root, "completion",
              "Print a shell completion script (bash): verbs, flags, flag choices, files, "
              "and queue names from the master (`taskq queue list`). Load it with `source "
              "<(taskq completion bash)`");
  auto shell = std::make_shared<std::string>();
  completion->add_option("SHELL", *shell, "The shell: bash")
      ->required()
      ->check(CLI::IsMember({"bash"}));
  const CLI::App* tree = &root;
  // `shell` is captured to keep the string the option writes to alive.
  verbs->push_back({completion, [tree, shell] {
                      PrintLine("", BashCompletionScript(*tree));
                      return kExitOk;
                    }});
}

}  // namespace taskq::cli
