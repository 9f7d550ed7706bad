#!/usr/bin/env bash
# Builds the real Kubernetes test servers (etcd, kube-apiserver, kube-controller-manager,
# and a kubectl of the same release) from the Go modules pinned in servers/ and etcd/,
# into a cache folder keyed by their versions, and prints that folder. A folder already
# holding all four binaries is reused. Go only builds these test servers; the project
# itself is Python.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s="$(sed -n 's/^\s*\(require \)\?k8s.io\/kubernetes \(v[0-9.]*\).*$/\2/p' "$here/servers/go.mod")"
etcd="$(sed -n 's/^\s*\(require \)\?go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\).*$/\2/p' "$here/etcd/go.mod")"
cache="${K8S_SERVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/minio-backup-operator}"
# Keyed by the versions and by this recipe: a change to either builds anew.
recipe="$(cat "$0" "$here"/servers/go.* "$here"/etcd/go.* | sha256sum | cut -c1-8)"
dir="$cache/k8s-$k8s-etcd-$etcd-$recipe"
binaries=(etcd kube-apiserver kube-controller-manager kubectl)
missing=0
for binary in "${binaries[@]}"; do [[ -x "$dir/$binary" ]] || missing=1; done
if (( missing )); then
  command -v go >/dev/null || { echo "build.sh: Go is needed to build the test servers" >&2; exit 1; }
  started=$SECONDS
  mkdir -p "$dir.partial"
  # A build cache of its own (about 3 GB), removed after: the binaries are what is kept.
  export GOCACHE="$cache/.go-build"
  echo "build.sh: building kube-apiserver, kube-controller-manager, kubectl $k8s and etcd $etcd into $dir (the first time takes a while)" >&2
  # The version the servers report (Helm checks a chart's kubeVersion against it), set
  # as Kubernetes' own release build sets it.
  minor="$(echo "$k8s" | cut -d. -f2)"
  version=""
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version+=" -X $package.gitVersion=$k8s -X $package.gitMajor=1 -X $package.gitMinor=$minor"
    version+=" -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/servers" && go build -trimpath -ldflags="-s -w$version" -o "$dir.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$dir.partial/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$dir" && mv "$dir.partial" "$dir"
  rm -rf "$GOCACHE"
  echo "build.sh: built in $((SECONDS - started)) s ($(du -sh "$dir" | cut -f1))" >&2
fi
echo "$dir"
