#!/usr/bin/env bash
# image.sh NAME VERSION BINARY CONFIG CONFIG_PATH ARG...
# Builds the OCI image localhost/pktstat-bpf/NAME:VERSION with buildah from
# scratch: the static BINARY, its default CONFIG at CONFIG_PATH, and the
# CA certificates (the exporters' TLS to backends needs them). The
# entrypoint is the binary, the default command its ARGs (a Kubernetes
# container's args replace them). No base image is pulled.
set -euo pipefail
name=$1 version=$2 binary=$3 config=$4 config_path=$5
shift 5
ca=/etc/ssl/certs/ca-certificates.crt
test -f "$ca" || { echo "image: $ca is missing: apt-get install ca-certificates" >&2; exit 1; }
file "$binary" | grep -q 'statically linked' || { echo "image: $binary is not statically linked" >&2; exit 1; }
ref=localhost/pktstat-bpf/$name:$version
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy --chmod 0755 "$ctr" "$binary" "/$(basename "$binary")" >/dev/null
buildah copy --chmod 0644 "$ctr" "$config" "$config_path" >/dev/null
buildah copy --chmod 0644 "$ctr" "$ca" "$ca" >/dev/null
args=$(printf '"%s",' "$@")
buildah config --entrypoint "[\"/$(basename "$binary")\"]" --cmd "[${args%,}]" \
	--label org.opencontainers.image.title="$name" \
	--label org.opencontainers.image.version="$version" \
	--label org.opencontainers.image.source=pktstat-bpf \
	--env SSL_CERT_FILE="$ca" "$ctr"
buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
trap - EXIT
echo "image: built $ref"
