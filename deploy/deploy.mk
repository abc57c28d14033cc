# Container images and their tests: `make image` builds both agents as OCI
# images from scratch with buildah; test-deploy decodes the Kubernetes
# manifests strictly and runs each image under podman with the container spec
# of its DaemonSet. Included by the root Makefile.

# The version the images are tagged with; the distribution's own version
# (builder-config.yaml dist.version) is the same.
VERSION := $(shell sed -n 's/^  version: //p' builder-config.yaml)
IMAGE_PREFIX := localhost/pktstat-bpf

DEPS_TARGETS += deps-image
TEST_TARGETS += test-deploy

.PHONY: image deps-image test-deploy test-deploy-unit

## deps-image: buildah, podman and runc (crun refuses this host's hybrid cgroups), CA certificates
deps-image:
	@command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null \
		&& command -v file >/dev/null && test -f /etc/ssl/certs/ca-certificates.crt || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc ca-certificates file >/dev/null; }

## image: localhost/pktstat-bpf/otelcol-pktstat:$(VERSION) and localhost/pktstat-bpf/telegraf:$(VERSION), from scratch
image: $(OTELCOL) $(BUILD)/telegraf | deps-image
	deploy/image.sh otelcol-pktstat $(VERSION) $(OTELCOL) otelreceiver/dist/otelcol-pktstat.yaml \
		/etc/otelcol-pktstat/config.yaml --config /etc/otelcol-pktstat/config.yaml
	deploy/image.sh telegraf $(VERSION) $(BUILD)/telegraf telegrafplugin/dist/telegraf.conf \
		/etc/telegraf/telegraf.conf --config /etc/telegraf/telegraf.conf

## test-deploy: the manifests, decoded strictly, and both images under podman with their DaemonSet's container spec
test-deploy: image
	cd deploy && PKTSTAT_VERSION=$(VERSION) PKTSTAT_IMAGE_PREFIX=$(IMAGE_PREFIX) $(GO) test -count=1 -p 1 -timeout 10m ./...

## test-deploy-unit: the manifest tests only (no images, no root)
test-deploy-unit:
	cd deploy && PKTSTAT_VERSION=$(VERSION) PKTSTAT_REQUIRE_BPF= $(GO) test -count=1 -short ./...
