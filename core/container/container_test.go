package container

import (
	"strings"
	"testing"
)

// Ids in the shapes the runtimes print: 64 lower-case hex digits for
// containers, a dashed UUID or 32 hex digits (static pods) for pods.
const (
	cid       = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
	nodeCID   = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	uid       = "0d3f5e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
	staticUID = "6e0c1f8d2b7a4c9e8f1d3b5a7c9e0f2d"
)

// podEsc is uid as the kubelet's systemd driver writes it in a slice name.
var podEsc = strings.ReplaceAll(uid, "-", "_")

func TestParse(t *testing.T) {
	cases := []struct {
		name string
		path string
		want Identity
	}{
		// Docker.
		{"docker systemd", "/system.slice/docker-" + cid + ".scope", Identity{ContainerID: cid}},
		{"docker cgroupfs", "/docker/" + cid, Identity{ContainerID: cid}},
		{"docker no leading slash", "system.slice/docker-" + cid + ".scope", Identity{ContainerID: cid}},
		{"docker trailing slash", "/docker/" + cid + "/", Identity{ContainerID: cid}},
		{"docker rootless systemd", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + cid + ".scope", Identity{ContainerID: cid}},
		{"docker custom cgroup parent", "/actions_job/" + cid, Identity{ContainerID: cid}},
		{"docker in docker", "/docker/" + nodeCID + "/docker/" + cid, Identity{ContainerID: cid}},
		{"systemd inside a docker container", "/system.slice/docker-" + cid + ".scope/system.slice/nginx.service", Identity{ContainerID: cid}},

		// Podman.
		{"podman rootful", "/machine.slice/libpod-" + cid + ".scope", Identity{ContainerID: cid}},
		{"podman crun payload cgroup", "/machine.slice/libpod-" + cid + ".scope/container", Identity{ContainerID: cid}},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + cid + ".scope/container", Identity{ContainerID: cid}},
		{"podman pod", "/machine.slice/machine-libpod_pod_" + nodeCID + ".slice/libpod-" + cid + ".scope/container", Identity{ContainerID: cid}},
		{"podman cgroupfs", "/libpod_parent/libpod-" + cid, Identity{ContainerID: cid}},

		// Kubernetes, systemd driver.
		{"containerd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podEsc + ".slice/cri-containerd-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"containerd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podEsc + ".slice/cri-containerd-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"containerd guaranteed", "/kubepods.slice/kubepods-pod" + podEsc + ".slice/cri-containerd-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"containerd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + staticUID + ".slice/cri-containerd-" + cid + ".scope", Identity{ContainerID: cid, PodUID: staticUID}},
		{"cri-o burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podEsc + ".slice/crio-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"cri-o payload cgroup", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podEsc + ".slice/crio-" + cid + ".scope/container", Identity{ContainerID: cid, PodUID: uid}},
		{"cri-dockerd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podEsc + ".slice/docker-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"pod-level cgroup", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podEsc + ".slice", Identity{PodUID: uid}},
		{"kind node", "/system.slice/docker-" + nodeCID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + podEsc + ".slice/cri-containerd-" + cid + ".scope", Identity{ContainerID: cid, PodUID: uid}},
		{"kind node pod-level cgroup", "/system.slice/docker-" + nodeCID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + podEsc + ".slice", Identity{PodUID: uid}},
		{"systemd driver with cgroupfs runtime", "/system.slice/containerd.service/kubepods-besteffort-pod" + podEsc + ".slice:cri-containerd:" + cid, Identity{ContainerID: cid, PodUID: uid}},
		{"systemd driver with cgroupfs cri-o", "/system.slice/crio.service/kubepods-burstable-pod" + podEsc + ".slice:crio:" + cid, Identity{ContainerID: cid, PodUID: uid}},

		// Kubernetes, cgroupfs driver.
		{"cgroupfs containerd burstable", "/kubepods/burstable/pod" + uid + "/" + cid, Identity{ContainerID: cid, PodUID: uid}},
		{"cgroupfs containerd besteffort", "/kubepods/besteffort/pod" + uid + "/" + cid, Identity{ContainerID: cid, PodUID: uid}},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid, Identity{ContainerID: cid, PodUID: uid}},
		{"cgroupfs cri-o", "/kubepods/besteffort/pod" + uid + "/crio-" + cid, Identity{ContainerID: cid, PodUID: uid}},
		{"cgroupfs static pod", "/kubepods/burstable/pod" + staticUID + "/" + cid, Identity{ContainerID: cid, PodUID: staticUID}},

		// Near-misses.
		{"empty", "", Identity{}},
		{"root", "/", Identity{}},
		{"docker daemon", "/system.slice/docker.service", Identity{}},
		{"containerd daemon", "/system.slice/containerd.service", Identity{}},
		{"login session", "/user.slice/user-1000.slice/session-2.scope", Identity{}},
		{"docker shm mount unit", "/system.slice/var-lib-docker-containers-" + cid + "-mounts-shm.mount", Identity{}},
		{"docker id with other unit suffix", "/system.slice/docker-" + cid + ".service", Identity{}},
		{"bare id as scope", "/system.slice/" + cid + ".scope", Identity{}},
		{"63 hex digits", "/system.slice/docker-" + cid[:63] + ".scope", Identity{}},
		{"65 hex digits", "/docker/" + cid + "0", Identity{}},
		{"upper-case id", "/system.slice/docker-" + strings.ToUpper(cid) + ".scope", Identity{}},
		{"podman conmon", "/machine.slice/libpod-conmon-" + cid + ".scope", Identity{}},
		{"cri-o conmon keeps the pod only", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podEsc + ".slice/crio-conmon-" + cid + ".scope", Identity{PodUID: uid}},
		{"unknown runtime prefix", "/system.slice/rkt-" + cid + ".scope", Identity{}},
		{"qos slice without pod", "/kubepods.slice/kubepods-burstable.slice", Identity{}},
		{"dashed uid in a slice name", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice", Identity{}},
		{"pod slice outside kubepods", "/system.slice/app-pod" + podEsc + ".slice", Identity{}},
		{"cgroupfs pod outside kubepods", "/system.slice/pod" + uid + "/" + cid, Identity{ContainerID: cid}},
		{"short pod uid", "/kubepods/burstable/pod1234/" + cid, Identity{ContainerID: cid}},
		{"pod uid with a non-hex digit", "/kubepods/burstable/pod" + uid[:35] + "g/" + cid, Identity{ContainerID: cid}},
		{"pod uid with dashes misplaced", "/kubepods/burstable/pod" + uid[:7] + "-" + uid[9:] + "0/" + cid, Identity{ContainerID: cid}},
		{"escaped uid in a cgroupfs path", "/kubepods/burstable/pod" + podEsc + "/" + cid, Identity{ContainerID: cid}},
		{"colon form without a slice", "/system.slice/containerd.service/kubepods-besteffort-pod" + podEsc + ":cri-containerd:" + cid, Identity{ContainerID: cid}},
		{"podman pod slice is not a kubernetes pod", "/machine.slice/machine-libpod_pod_" + nodeCID + ".slice", Identity{}},
		{"colon name from another tool", "/system.slice/foo:bar:" + cid[:10], Identity{}},
		{"unknown runtime in colon form", "/system.slice/containerd.service/kubepods-besteffort-pod" + podEsc + ".slice:rkt:" + cid, Identity{PodUID: uid}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Parse(c.path); got != c.want {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", c.path, got, c.want)
			}
		})
	}
}
