#!/usr/bin/env bash
# Installs the Debian packages taskq needs to build and test, but only the
# ones that are missing: dpkg-query first, apt-get only if something is
# absent. Used by tests/run.sh and deploy/demo.sh.
#
#   deploy/install-deps.sh [--with-clang]
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config
          libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
          libabsl-dev libcli11-dev googletest libgtest-dev libgmock-dev libbenchmark-dev
          libsqlite3-dev libssl-dev
          openssl  # openssl: the TLS test makes its certificate with it
          # The master's --http-listen (/metrics), and the Prometheus server
          # its scrape test runs (tests/metrics_prometheus_test.cc).
          libcpp-httplib-dev prometheus
          # Several masters coordinate through etcd (issue 18): its v3 API's
          # .proto files (the build generates the client from them), and the
          # server the tests run on loopback.
          golang-etcd-server-dev etcd-server
          # tmux: the `taskq top` test drives it in a terminal (tests/cli_top_test.cc).
          tmux
          # The dashboard's browser test (tests/python/test_dashboard.py):
          # headless Chromium driven through chromedriver by Selenium.
          chromium chromium-driver python3-selenium
          # The Python client (clients/python) and its tests: Debian's python3;
          # pip, setuptools and wheel install it from the checkout (no registry).
          python3 python3-grpcio python3-protobuf python3-pytest python3-setuptools
          python3-pip python3-wheel
          # The offline check of deploy/k8s (tests/k8s_manifests_check.py).
          python3-yaml)
for arg in "$@"; do
  case "$arg" in
    --with-clang) packages+=(clang libclang-rt-14-dev) ;;
    *) echo "usage: $0 [--with-clang]" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "==> Installing missing packages: ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"

# Debian's prometheus package starts a system-wide server (port 9090, every
# address) on a systemd host. The tests run their own on loopback; a server
# installed only for them should not stay up. One that was there before is
# left alone: only a package this run installed is stopped and disabled.
# etcd-server likewise (etcd.service, port 2379 on loopback).
for service in prometheus:prometheus etcd-server:etcd; do
  package=${service%%:*} unit=${service##*:}
  if [[ " ${missing[*]} " == *" $package "* ]] && [[ -d /run/systemd/system ]]; then
    echo "==> Stopping and disabling the $unit service the package started (the tests run their own)" >&2
    "${sudo[@]}" systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
  fi
done
