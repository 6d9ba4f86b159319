#include "client/credential_commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/json_format.h"
#include "common/join_bundle.h"
#include "common/x509.h"
#include "common/private_file.h"
#include "common/read_file.h"

namespace taskq::cli {
namespace {

struct CreateArgs {
  std::string name;
  std::string role;
  std::vector<std::string> queues;
  std::string expires;
  bool cert = false;
  std::string cert_out;
  std::string bundle;
  std::vector<std::string> bundle_masters;
};

v1::Role RoleFromName(absl::string_view name) {
  if (name == "admin") return v1::ROLE_ADMIN;
  if (name == "producer") return v1::ROLE_PRODUCER;
  if (name == "worker") return v1::ROLE_WORKER;
  if (name == "reader") return v1::ROLE_READER;
  return v1::ROLE_UNSPECIFIED;
}

std::string RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_ADMIN: return "admin";
    case v1::ROLE_PRODUCER: return "producer";
    case v1::ROLE_WORKER: return "worker";
    case v1::ROLE_READER: return "reader";
    default: return "-";
  }
}

std::string KindText(v1::CredentialKind kind) {
  switch (kind) {
    case v1::CREDENTIAL_KIND_TOKEN: return "token";
    case v1::CREDENTIAL_KIND_CERTIFICATE: return "certificate";
    case v1::CREDENTIAL_KIND_MASTER_TOKEN: return "master-token";
    default: return "-";
  }
}

// "2025-01-31T12:00:00Z"; "-" for 0 (never / not).
std::string TimeText(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// The directory `path` would be created in is writable (checked before the
// master makes a credential whose secret would then have nowhere to go).
absl::Status CheckCanCreate(const std::string& path, absl::string_view flag) {
  if (Exists(path)) {
    return absl::AlreadyExistsError(absl::StrCat(
        flag, " ", path, " exists; remove it or choose another path (it is never overwritten)"));
  }
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
  if (::access(dir.c_str(), W_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", flag, " ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Creates `path` mode 0600 (never replacing a file) holding `data`.
absl::Status WritePrivateFile(const std::string& path, const std::string& data) {
  absl::Status s = CreatePrivateFile(path, data);
  return s.ok() ? s : absl::FailedPreconditionError(s.message());
}

// Where the bundle's clients reach the master: --bundle-master, else the
// addresses the master announces (init's --host names), else the ones this
// CLI used (then with its --tls-server-name).
void FillBundleMasters(const CreateArgs& args, const v1::CreateCredentialResponse& response,
                       const ConnectOptions& used, v1::JoinBundle* bundle) {
  if (!args.bundle_masters.empty()) {
    for (const auto& m : args.bundle_masters) bundle->add_master(m);
  } else if (response.join_addresses_size() > 0) {
    *bundle->mutable_master() = response.join_addresses();
  } else {
    if (!used.master.empty()) {
      bundle->add_master(used.master);
    } else {
      for (const auto& m : used.masters) bundle->add_master(m);
    }
    bundle->set_server_name(used.tls_server_name);
  }
}

absl::StatusOr<std::string> BundleCa(const v1::CreateCredentialResponse& response,
                                     const ConnectOptions& used) {
  if (!response.ca_pem().empty()) return response.ca_pem();
  if (!used.tls_ca_file.empty()) return ReadFileToString(used.tls_ca_file);
  return used.tls_ca_pem;
}

int RunCreate(const GlobalOptions& globals, const CreateArgs& args) {
  v1::CreateCredentialRequest request;
  request.set_name(args.name);
  request.set_role(RoleFromName(args.role));
  const bool needs_queues =
      request.role() == v1::ROLE_PRODUCER || request.role() == v1::ROLE_WORKER;
  if (args.queues.empty() && needs_queues) {
    return UsageError(absl::StrCat("a ", args.role,
                                   " credential needs --queues PATTERN... (e.g. --queues tasks "
                                   "'img.*'; '*' = every queue)"));
  }
  if (args.queues.empty()) {
    request.add_queues("*");
  } else {
    for (const auto& q : args.queues) request.add_queues(q);
  }
  if (!args.expires.empty()) {
    auto expires = ParseExpires(args.expires);
    if (!expires.ok()) return UsageError(expires.status().message());
    request.set_expires_in_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(*expires)));
  }
  if (args.cert && args.bundle.empty() && args.cert_out.empty()) {
    return UsageError("--cert needs --bundle FILE or --cert-out PREFIX (where the key goes)");
  }
  if (!args.bundle_masters.empty() && args.bundle.empty()) {
    return UsageError("--bundle-master needs --bundle FILE");
  }
  if (!args.cert_out.empty() && !args.cert) return UsageError("--cert-out needs --cert");
  if (!args.bundle.empty()) {
    if (auto s = CheckCanCreate(args.bundle, "--bundle"); !s.ok()) return UsageError(s.message());
  }
  if (!args.cert_out.empty() && args.bundle.empty()) {
    for (const char* ext : {".pem", ".key"}) {
      const std::string path = args.cert_out + ext;
      if (auto s = CheckCanCreate(path, "--cert-out"); !s.ok()) return UsageError(s.message());
    }
  }
  // The private key is made here and never leaves this host: the master
  // gets only the public key and signs a certificate for it.
  std::string key_pem;
  if (args.cert) {
    auto key = MakePrivateKeyPem();
    auto public_key = key.ok() ? PublicKeyPem(*key) : key.status();
    if (!public_key.ok()) {
      PrintError(absl::StrCat("cannot make a key: ", public_key.status().message()));
      return kExitError;
    }
    key_pem = *std::move(key);
    request.set_public_key_pem(*public_key);
  }

  auto used = ResolvedConnectOptions(globals);
  if (!used.ok()) {
    PrintError(used.status().message());
    return kExitError;
  }
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto created = client->CreateCredential(request);
  if (!created.ok()) return ReportError(created.status(), CallKind::kAdmin, globals);
  const std::string lost_hint = absl::StrCat(
      "; the credential \"", args.name, "\" was created: revoke it (taskq credential revoke ",
      args.name, ") and create it again");

  if (!args.bundle.empty()) {
    v1::JoinBundle bundle;
    FillBundleMasters(args, *created, *used, &bundle);
    auto ca = BundleCa(*created, *used);
    if (!ca.ok()) {
      PrintError(absl::StrCat(ca.status().message(), lost_hint));
      return kExitError;
    }
    bundle.set_ca_pem(*ca);
    bundle.set_credential(args.name);
    bundle.set_token(created->token());
    bundle.set_client_cert_pem(created->certificate_pem());
    if (!created->certificate_pem().empty()) bundle.set_client_key_pem(key_pem);
    if (absl::Status s = WriteJoinBundle(args.bundle, bundle); !s.ok()) {
      PrintError(absl::StrCat(s.message(), lost_hint));
      return kExitError;
    }
    if (bundle.ca_pem().empty()) {
      PrintError(
          "note: the bundle holds no CA certificate (the master has none and --tls-ca was not "
          "given): its users verify the master with the system's root certificates");
    }
    PrintLine("", args.bundle);
    return kExitOk;
  }
  if (args.cert) {
    const std::string cert_path = args.cert_out + ".pem";
    const std::string key_path = args.cert_out + ".key";
    absl::Status s = WritePrivateFile(cert_path, created->certificate_pem());
    if (s.ok()) s = WritePrivateFile(key_path, key_pem);
    if (!s.ok()) {
      PrintError(absl::StrCat(s.message(), lost_hint));
      return kExitError;
    }
    PrintLine("", cert_path);
    PrintLine("", key_path);
    return kExitOk;
  }
  PrintLine("", created->token());
  PrintError("note: the token above is shown only this once (the master keeps only a hash)");
  return kExitOk;
}

int RunList(const GlobalOptions& globals, bool all, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto list = client->ListCredentials(all);
  if (!list.ok()) return ReportError(list.status(), CallKind::kAdmin, globals);
  if (json) {
    PrintLine("", CredentialListJson(*list));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"NAME", "ROLE", "QUEUES", "KIND", "CREATED", "EXPIRES"};
  if (all) header.push_back("REVOKED");
  header.push_back("CREATED_BY");
  rows.push_back(header);
  for (const v1::CredentialInfo& c : *list) {
    std::vector<std::string> row = {
        c.name(),
        RoleName(c.role()),
        c.queues().empty() ? "-" : absl::StrJoin(c.queues(), ","),
        KindText(c.kind()),
        TimeText(c.created_unix_ms()),
        TimeText(c.expires_unix_ms())};
    if (all) row.push_back(TimeText(c.revoked_unix_ms()));
    row.push_back(c.created_by().empty() ? "-" : c.created_by());
    rows.push_back(std::move(row));
  }
  PrintTable(rows);
  return kExitOk;
}

int RunRevoke(const GlobalOptions& globals, const std::string& name) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->RevokeCredential(name); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

}  // namespace

absl::StatusOr<absl::Duration> ParseExpires(absl::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--expires \"", text, "\" is not a duration like 30d, 12h, 90m or 1d12h"));
  };
  absl::Duration total = absl::ZeroDuration();
  absl::string_view rest = text;
  if (rest.empty()) return bad();
  while (!rest.empty()) {
    size_t digits = 0;
    while (digits < rest.size() && absl::ascii_isdigit(static_cast<unsigned char>(rest[digits]))) {
      ++digits;
    }
    if (digits == 0 || digits > 9 || digits == rest.size()) return bad();
    int64_t n = 0;
    if (!absl::SimpleAtoi(rest.substr(0, digits), &n)) return bad();
    switch (rest[digits]) {
      case 'd': total += absl::Hours(24) * n; break;
      case 'h': total += absl::Hours(n); break;
      case 'm': total += absl::Minutes(n); break;
      case 's': total += absl::Seconds(n); break;
      default: return bad();
    }
    rest.remove_prefix(digits + 1);
  }
  if (total <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--expires must be more than 0 (leave it out: never)");
  }
  if (total > kMaxCredentialLifetime) {
    return absl::InvalidArgumentError(
        absl::StrCat("--expires ", text, " is more than 10 years (leave it out: never)"));
  }
  return total;
}

void AddCredentialCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  CLI::App* credential = app.add_subcommand(
      "credential",
      "Create, list and revoke credentials with roles (admin only; see `taskq credential VERB "
      "--help`)");
  credential->require_subcommand(1);
  credential->footer(kVerbFooter);

  auto create = std::make_shared<CreateArgs>();
  CLI::App* c = AddVerb(
      credential, "create",
      "Create a credential. Prints its token on stdout, this once (the master keeps only a "
      "salted hash), or with --bundle writes a join bundle (mode 0600) that `taskq-worker "
      "--join FILE` and `taskq --join FILE` need nothing else beside, and prints its path");
  c->add_option("NAME", create->name, "Credential name: 1-64 characters of [A-Za-z0-9_.-]")
      ->required();
  c->add_option("--role", create->role,
                "admin (everything), producer (put, status, join, its reply queues), worker "
                "(the Work stream and leases on its queues), reader (list, stats, status)")
      ->required()
      ->check(CLI::IsMember({"admin", "producer", "worker", "reader"}));
  c->add_option("--queues", create->queues,
                "Queues it may touch: names or fnmatch globs ('img.*'; quote them); '*' = all. "
                "Required for producer and worker; default '*' for reader and admin")
      ->type_name("PATTERN");
  c->add_option("--expires", create->expires,
                "Lifetime: 30d, 12h, 90m, 1d12h... (default: never)")
      ->type_name("DURATION");
  c->add_flag("--cert", create->cert,
              "A client certificate (mTLS) instead of a token: the key is made here, the master "
              "signs its certificate. Needs --bundle or --cert-out");
  c->add_option("--cert-out", create->cert_out,
                "With --cert and no --bundle: write PREFIX.pem (certificate) and PREFIX.key "
                "(private key), mode 0600")
      ->type_name("PREFIX");
  c->add_option("--bundle", create->bundle,
                "Write a join bundle here (mode 0600; never overwrites) and print its path, "
                "not the token")
      ->type_name("FILE");
  c->add_option("--bundle-master", create->bundle_masters,
                "Address the bundle's users reach the master at, tried in order (default: the "
                "master's `init --host` names, else the address this command used)")
      ->type_name("HOST:PORT");
  verbs->push_back({c, [globals, create] { return RunCreate(*globals, *create); }});

  struct ListArgs {
    bool all = false;
    bool json = false;
  };
  auto list = std::make_shared<ListArgs>();
  CLI::App* l = AddVerb(credential, "list",
                        "List credentials, one row each: NAME ROLE QUEUES KIND CREATED EXPIRES "
                        "CREATED_BY (times in UTC, - = never); never a secret");
  l->add_flag("--all", list->all, "Include revoked credentials (adds a REVOKED column)");
  l->add_flag("--json", list->json,
              "Print one JSON document: {\"credentials\":[...]} (docs/CLI.md, JSON output)");
  verbs->push_back(
      {l, [globals, list] { return RunList(*globals, list->all, list->json); }});

  auto revoke_name = std::make_shared<std::string>();
  CLI::App* r = AddVerb(credential, "revoke",
                        "Revoke a credential at once: its next call is refused and its open "
                        "worker streams end. The master's own token cannot be revoked");
  r->add_option("NAME", *revoke_name, "Credential name")->required();
  verbs->push_back({r, [globals, revoke_name] { return RunRevoke(*globals, *revoke_name); }});
}

}  // namespace taskq::cli
