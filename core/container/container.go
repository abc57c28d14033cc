// Package container reads the container id and Kubernetes pod UID out of a
// cgroup path, for the docker, containerd, cri-o and podman runtimes under
// both the systemd and the cgroupfs cgroup drivers.
package container

import "strings"

// Identity is what a cgroup path says about the workload that owns it. Either
// field may be empty: a pod-level cgroup has a pod UID but no container, a
// plain Docker container has no pod.
type Identity struct {
	// ContainerID is the runtime's 64-character hexadecimal container id.
	ContainerID string
	// PodUID is the Kubernetes pod UID as the API server spells it: a
	// dashed UUID, or 32 hex digits for static pods.
	PodUID string
}

// runtimePrefixes name the container cgroups of each runtime: docker-<id>
// (Docker, also through cri-dockerd), cri-containerd-<id>, crio-<id> (CRI-O
// without the -conmon- monitor scope) and libpod-<id> (podman).
var runtimePrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-"}

// Parse returns the identity found in a cgroup path relative to the cgroup
// mount, with or without the leading slash. The deepest container wins, so
// that nested runtimes (a kind node, docker-in-docker) report the inner
// workload, and a pod found below a container discards that container because
// the outer one is a node, not a member of the pod.
func Parse(cgroupPath string) Identity {
	var id Identity
	inKubepods := false
	for part := range strings.SplitSeq(cgroupPath, "/") {
		if part == "" {
			continue
		}
		if strings.Contains(part, "kubepods") {
			inKubepods = true
		}
		// The systemd driver misconfigured against a cgroupfs runtime
		// leaves runc's "slice:prefix:name" cgroupsPath as a literal
		// directory name, for example
		// kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>.
		if slice, rest, ok := strings.Cut(part, ":"); ok {
			prefix, cid, ok := strings.Cut(rest, ":")
			if !ok {
				continue
			}
			if uid, ok := systemdPodUID(slice); ok {
				id = Identity{PodUID: uid}
			}
			if isHex(cid, 64) && isRuntimeName(prefix) {
				id.ContainerID = cid
			}
			continue
		}
		if uid, ok := podUID(part, inKubepods); ok {
			id = Identity{PodUID: uid}
			continue
		}
		if cid, ok := containerID(part); ok {
			id.ContainerID = cid
		}
	}
	return id
}

func isRuntimeName(prefix string) bool {
	for _, p := range runtimePrefixes {
		if prefix == strings.TrimSuffix(p, "-") {
			return true
		}
	}
	return false
}

// containerID recognises one path component as a container's cgroup.
func containerID(part string) (string, bool) {
	name, scope := strings.CutSuffix(part, ".scope")
	// The cgroupfs driver names a container's cgroup by its bare id (docker,
	// containerd); only the systemd driver wraps it in a runtime-named scope.
	if !scope && isHex(name, 64) {
		return name, true
	}
	for _, p := range runtimePrefixes {
		if cid, ok := strings.CutPrefix(name, p); ok && isHex(cid, 64) {
			return cid, true
		}
	}
	return "", false
}

// podUID recognises a kubelet pod cgroup: pod<uid> below a kubepods cgroup
// (cgroupfs driver), or <parents>-pod<uid>.slice (systemd driver).
func podUID(part string, inKubepods bool) (string, bool) {
	if strings.HasSuffix(part, ".slice") {
		return systemdPodUID(part)
	}
	if !inKubepods {
		return "", false
	}
	uid, ok := strings.CutPrefix(part, "pod")
	if !ok || !isUID(uid) {
		return "", false
	}
	return uid, true
}

// systemdPodUID parses kubepods-burstable-pod<uid>.slice. systemd reads a
// dash in a slice name as a level of the hierarchy, so the kubelet writes the
// UID's dashes as underscores; they are turned back here so the UID matches
// the API server's and the k8sattributes processor can associate it.
func systemdPodUID(part string) (string, bool) {
	name, ok := strings.CutSuffix(part, ".slice")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(name, "-pod")
	if i < 0 || !strings.Contains(name[:i], "kubepods") {
		return "", false
	}
	escaped := name[i+len("-pod"):]
	if strings.Contains(escaped, "-") {
		return "", false
	}
	uid := strings.ReplaceAll(escaped, "_", "-")
	if !isUID(uid) {
		return "", false
	}
	return uid, true
}

// isUID accepts a lower-case dashed UUID, or the 32 hex digits the kubelet
// uses as the UID of a static pod (a hash of its manifest).
func isUID(s string) bool {
	if isHex(s, 32) {
		return true
	}
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isLowerHex(c) {
				return false
			}
		}
	}
	return true
}

// isHex is strict about case because runtimes print ids in lower case; an
// upper-case run of hex digits in a path is something else.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !isLowerHex(c) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}
