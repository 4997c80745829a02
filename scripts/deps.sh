#!/usr/bin/env bash
# Installs the system packages probemesh's demo and tests need (Debian/Ubuntu),
# skipping the apt round-trip when everything is already there.
set -euo pipefail

packages=(
  iproute2 iptables          # namespaces, veths, VXLAN, kube-proxy-style NAT
  nftables                   # nft: the lab's kube-proxy in nftables mode, and the probe reading its table
  dnsmasq-base               # the lab's upstream and cluster DNS
  iputils-ping iputils-tracepath mtr-tiny   # reference tools, side by side
  tcpdump tshark             # reference capture and reading pcapng back
  libpcap-dev                # the pcap crate links libpcap to compile tcpdump filters to BPF
  dnsutils netcat-openbsd curl   # plain-tool checks in the lab tests
  procps psmisc              # ps/kill for process checks
  prometheus                 # promtool and a real Prometheus for the metrics tests
  python3-venv               # venvs for rotel (scripts/rotel.sh) and kubectl + kubernetes-validate (scripts/kube-tools.sh)
  systemd                    # systemd-analyze verifies deploy/systemd/mesh-probe.service
  etcd-server                # a real etcd (3.4) for the shared-state and failover tests
  protobuf-compiler          # protoc: etcd-client's build script compiles etcd's protos
  libprotobuf-dev            # google/protobuf/*.proto, which etcd's protos import (a Recommends, not pulled in here)
  chromium fonts-dejavu-core   # headless Chromium renders the HTML run reports in tests/tests/report.rs (screenshots, DOM)
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "probemesh: installing ${missing[*]} needs root: run it as root (or through sudo)" >&2
    exit 2
  fi
  echo "probemesh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
