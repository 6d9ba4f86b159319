#!/usr/bin/python3
"""Offline check of deploy/k8s/*.yaml (no cluster, no kubectl): kinds and
apiVersions, the fields each kind requires, and that the files agree with
each other and with the master's flags:

- every object is in the namespace of namespace.yaml;
- selectors match their pod templates; the StatefulSet's serviceName is
  the Service, whose selector picks the master's pods;
- the master's --data-dir is the persistent volume's mount, in both the
  init container and the master;
- the master's --listen/--keda-listen ports are Service ports;
- the ScaledObject scales the worker Deployment; its scalerAddress is the
  Service's cluster DNS name (a name the master's certificate names: an
  init --host) at the --keda-listen port; its queue is the workers' --queue;
  queue and targetPerWorker are strings (Kubernetes wants a string map);
- the TriggerAuthentication gives KEDA caCert/tlsClientCert/tlsClientKey
  from keys of a Secret defined here; every Secret a pod mounts is defined;
- Secrets hold placeholders only, never a key, certificate or token.

Usage: k8s_manifests_check.py DIR      check DIR, exit 1 listing problems
       k8s_manifests_check.py --self-test DIR
                                       break DIR's manifests in known ways
                                       and fail unless each is caught
Needs Debian's python3-yaml only.
"""
import copy
import glob
import os
import re
import sys

import yaml

API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "Secret": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
KEDA_TLS_PARAMETERS = {"caCert", "tlsClientCert", "tlsClientKey"}
SECRET_LOOKS_REAL = re.compile(r"BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)|tq1\.[0-9a-f]{16}\.")


def load(directory):
    docs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    return docs


def get(obj, *keys, default=None):
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and k < len(obj):
            obj = obj[k]
        else:
            return default
    return obj


def flag(args, name):
    """The value after `name` in a container's args, or None."""
    if name in args:
        i = args.index(name)
        if i + 1 < len(args):
            return str(args[i + 1])
    return None


def port_of(address):
    return int(address.rsplit(":", 1)[1]) if address and ":" in address else None


def check(docs):
    problems = []

    def need(condition, text):
        if not condition:
            problems.append(text)

    by_kind = {}
    for source, d in docs:
        kind = d.get("kind")
        name = get(d, "metadata", "name")
        where = f"{source}: {kind} {name}"
        need(kind in API_VERSIONS, f"{where}: unknown kind (expected one of {sorted(API_VERSIONS)})")
        need(d.get("apiVersion") == API_VERSIONS.get(kind),
             f"{where}: apiVersion {d.get('apiVersion')!r}, expected {API_VERSIONS.get(kind)!r}")
        need(bool(name), f"{source}: {kind} without metadata.name")
        by_kind.setdefault(kind, []).append((where, d))

    def one(kind):
        found = by_kind.get(kind, [])
        need(len(found) == 1, f"expected one {kind}, found {len(found)}")
        return found[0] if found else ("<missing " + kind + ">", {})

    _, ns = one("Namespace")
    namespace = get(ns, "metadata", "name")
    for kind, objects in by_kind.items():
        if kind == "Namespace":
            continue
        for where, d in objects:
            need(get(d, "metadata", "namespace") == namespace,
                 f"{where}: namespace {get(d, 'metadata', 'namespace')!r}, expected {namespace!r}")

    secrets = {get(d, "metadata", "name"): d for _, d in by_kind.get("Secret", [])}
    for where, d in by_kind.get("Secret", []):
        data = dict(d.get("stringData") or {})
        data.update(d.get("data") or {})
        need(bool(data), f"{where}: no keys")
        for key, value in data.items():
            need(not SECRET_LOOKS_REAL.search(str(value)),
                 f"{where}: key {key} looks like a real secret; keep placeholders in git")

    def workload_checks(where, d):
        labels = get(d, "spec", "template", "metadata", "labels", default={}) or {}
        match = get(d, "spec", "selector", "matchLabels", default={}) or {}
        need(bool(match) and all(labels.get(k) == v for k, v in match.items()),
             f"{where}: spec.selector.matchLabels {match} do not select the template's labels {labels}")
        spec = get(d, "spec", "template", "spec", default={}) or {}
        containers = spec.get("containers") or []
        need(bool(containers), f"{where}: no containers")
        for c in containers + (spec.get("initContainers") or []):
            need(bool(c.get("name")) and bool(c.get("image")), f"{where}: a container without name or image")
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for v in volumes.values():
            secret = get(v, "secret", "secretName")
            if secret is not None:
                need(secret in secrets, f"{where}: mounts Secret {secret!r}, not defined in deploy/k8s")
        return labels, spec, containers, volumes

    # The master.
    sts_where, sts = one("StatefulSet")
    svc_where, svc = one("Service")
    sts_labels, sts_spec, sts_containers, _ = workload_checks(sts_where, sts)
    need(get(sts, "spec", "serviceName") == get(svc, "metadata", "name"),
         f"{sts_where}: serviceName {get(sts, 'spec', 'serviceName')!r} is not the Service "
         f"{get(svc, 'metadata', 'name')!r}")
    svc_selector = get(svc, "spec", "selector", default={}) or {}
    need(bool(svc_selector) and all(sts_labels.get(k) == v for k, v in svc_selector.items()),
         f"{svc_where}: selector {svc_selector} does not pick the master's pods {sts_labels}")
    svc_ports = {p.get("port"): p for p in get(svc, "spec", "ports", default=[]) or []}
    master = next((c for c in sts_containers if "taskq-master" in (c.get("args") or c.get("command") or [])), None)
    need(master is not None, f"{sts_where}: no container runs taskq-master")
    master = master or {}
    args = [str(a) for a in (master.get("args") or []) + (master.get("command") or [])]
    data_dir = flag(args, "--data-dir")
    need(data_dir is not None, f"{sts_where}: the master has no --data-dir")
    claims = [get(t, "metadata", "name") for t in get(sts, "spec", "volumeClaimTemplates", default=[]) or []]
    need(bool(claims), f"{sts_where}: no volumeClaimTemplates (the data dir must persist)")
    for c in (sts_spec.get("initContainers") or []) + [master]:
        mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
        need(mounts.get(data_dir) in claims,
             f"{sts_where}: container {c.get('name')!r} does not mount a persistent volume at --data-dir {data_dir}")
    need(master.get("readinessProbe") is not None, f"{sts_where}: the master has no readinessProbe")
    keda_listen = flag(args, "--keda-listen")
    need(keda_listen is not None, f"{sts_where}: the master has no --keda-listen")
    for f in ("--listen", "--keda-listen"):
        port = port_of(flag(args, f))
        need(port in svc_ports and svc_ports[port].get("targetPort", port) == port,
             f"{svc_where}: no port {port} to {port} for the master's {f}")
    init_text = " ".join(
        " ".join(str(a) for a in (c.get("command") or []) + (c.get("args") or []))
        for c in sts_spec.get("initContainers") or [])
    hosts = set(re.findall(r"--host\s+(\S+)", init_text))

    # The workers and KEDA.
    dep_where, dep = one("Deployment")
    _, _, dep_containers, _ = workload_checks(dep_where, dep)
    worker_args = [str(a) for c in dep_containers for a in (c.get("args") or []) + (c.get("command") or [])]
    worker_queue = flag(worker_args, "--queue")
    need(flag(worker_args, "--join") is not None, f"{dep_where}: the worker has no --join bundle")

    so_where, so = one("ScaledObject")
    target = get(so, "spec", "scaleTargetRef", default={}) or {}
    need(target.get("kind", "Deployment") == "Deployment" and target.get("name") == get(dep, "metadata", "name"),
         f"{so_where}: scaleTargetRef {target} is not the Deployment {get(dep, 'metadata', 'name')!r}")
    triggers = get(so, "spec", "triggers", default=[]) or []
    need(len(triggers) >= 1, f"{so_where}: no triggers")
    ta_where, ta = one("TriggerAuthentication")
    expected_host = f"{get(svc, 'metadata', 'name')}.{namespace}.svc.cluster.local"
    for t in triggers:
        need(t.get("type") in ("external", "external-push"), f"{so_where}: trigger type {t.get('type')!r}")
        meta = t.get("metadata") or {}
        for key, value in meta.items():
            need(isinstance(value, str), f"{so_where}: metadata.{key} must be a string (quote it)")
        address = str(meta.get("scalerAddress", ""))
        host, _, port = address.rpartition(":")
        need(host == expected_host,
             f"{so_where}: scalerAddress host {host!r} is not the Service's name {expected_host!r}")
        need(host in hosts, f"{so_where}: scalerAddress host {host!r} is not named by the master's certificate (init --host)")
        need(port.isdigit() and int(port) == port_of(keda_listen),
             f"{so_where}: scalerAddress port {port!r} is not the master's --keda-listen {keda_listen}")
        need("queue" in meta and "targetPerWorker" in meta, f"{so_where}: metadata needs queue and targetPerWorker")
        need(str(meta.get("queue")) == worker_queue,
             f"{so_where}: scales on queue {meta.get('queue')!r}, the workers serve {worker_queue!r}")
        need(get(t, "authenticationRef", "name") == get(ta, "metadata", "name"),
             f"{so_where}: authenticationRef {get(t, 'authenticationRef', 'name')!r} is not the TriggerAuthentication")
    refs = get(ta, "spec", "secretTargetRef", default=[]) or []
    need({r.get("parameter") for r in refs} == KEDA_TLS_PARAMETERS,
         f"{ta_where}: parameters {sorted(r.get('parameter') for r in refs)}, expected {sorted(KEDA_TLS_PARAMETERS)}")
    for r in refs:
        secret = secrets.get(r.get("name"), {})
        keys = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
        need(r.get("key") in keys, f"{ta_where}: {r.get('parameter')} reads {r.get('name')}/{r.get('key')}, not defined")
    return problems


def self_test(docs):
    """Each mutation must be caught; the originals must pass."""
    def find(kind):
        return next(d for _, d in docs if d.get("kind") == kind)

    def mutate(fn):
        broken = copy.deepcopy(docs)
        fn({d.get("kind"): d for _, d in broken if d.get("kind") != "Secret"},
           [d for _, d in broken if d.get("kind") == "Secret"])
        return broken

    def keda_port(k, _):
        t = k["ScaledObject"]["spec"]["triggers"][0]["metadata"]
        t["scalerAddress"] = t["scalerAddress"].rsplit(":", 1)[0] + ":6001"

    def target_name(k, _):
        k["ScaledObject"]["spec"]["scaleTargetRef"]["name"] = "workers"

    def service_name(k, _):
        k["StatefulSet"]["spec"]["serviceName"] = "master"

    def labels(k, _):
        k["Deployment"]["spec"]["template"]["metadata"]["labels"] = {"app": "other"}

    def real_secret(_, s):
        s[0]["stringData"][next(iter(s[0]["stringData"]))] = "-----BEGIN PRIVATE KEY-----\nxx"

    def unquoted(k, _):
        k["ScaledObject"]["spec"]["triggers"][0]["metadata"]["targetPerWorker"] = 10

    def api_version(k, _):
        k["ScaledObject"]["apiVersion"] = "keda.k8s.io/v1alpha1"

    def no_volume(k, _):
        k["StatefulSet"]["spec"]["volumeClaimTemplates"] = []

    def secret_key(k, _):
        k["TriggerAuthentication"]["spec"]["secretTargetRef"][0]["key"] = "ca.pem"

    failures = []
    if check(docs):
        failures.append("the manifests as they are fail: " + "; ".join(check(docs)))
    for fn in (keda_port, target_name, service_name, labels, real_secret, unquoted, api_version,
               no_volume, secret_key):
        if not check(mutate(fn)):
            failures.append(f"mutation {fn.__name__} was not caught")
    return failures


def main(argv):
    if len(argv) == 3 and argv[1] == "--self-test":
        failures = self_test(load(argv[2]))
        for f in failures:
            print("FAIL:", f)
        print("self-test:", "failed" if failures else "every mutation caught")
        return 1 if failures else 0
    if len(argv) != 2:
        print(__doc__)
        return 2
    docs = load(argv[1])
    problems = check(docs)
    for p in problems:
        print("problem:", p)
    print(f"{len(docs)} objects in {argv[1]}: " + ("OK" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
