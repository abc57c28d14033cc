package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// agent is one agent's deployment: its manifests and what its image holds.
type agent struct {
	name      string // image and object name
	dir       string // manifests
	image     string // image name under the prefix
	configKey string // the ConfigMap key holding the agent's config
	promPort  int32
	pinPath   string // pin_path in the ConfigMap's config
	// modeLine is the config's mode line, after which the podman test adds
	// interfacesLine (a format taking the interface name).
	modeLine, interfacesLine string
	// readyLog is what the agent logs once its programs count.
	readyLog string
}

var agents = []agent{
	{name: "otelcol-pktstat", dir: "../otelreceiver/dist/kubernetes", image: "otelcol-pktstat", configKey: "config.yaml",
		promPort: 9464, pinPath: "/sys/fs/bpf/pktstat-bpf/otelcol-pktstat",
		modeLine: "    mode: tc\n", interfacesLine: "    interfaces: [%s]\n", readyLog: "Everything is ready"},
	{name: "telegraf-pktstat-bpf", dir: "../telegrafplugin/dist/kubernetes", image: "telegraf", configKey: "telegraf.conf",
		promPort: 9273, pinPath: "/sys/fs/bpf/pktstat-bpf/telegraf",
		modeLine: "  mode = \"tc\"\n", interfacesLine: "  interfaces = [%q]\n", readyLog: "counting started"},
}

// manifests is one agent's decoded objects.
type manifests struct {
	daemonSet      *appsv1.DaemonSet
	configMap      *corev1.ConfigMap
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
}

// load decodes every file of the agent's directory strictly: a field the
// Kubernetes API does not know fails, as `kubectl apply --validate=strict`.
func (a agent) load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(a.dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", a.dir, err)
	}
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch meta.Kind {
			case "DaemonSet":
				m.daemonSet = &appsv1.DaemonSet{}
				obj = m.daemonSet
			case "ConfigMap":
				m.configMap = &corev1.ConfigMap{}
				obj = m.configMap
			case "Service":
				m.service = &corev1.Service{}
				obj = m.service
			case "ServiceAccount":
				m.serviceAccount = &corev1.ServiceAccount{}
				obj = m.serviceAccount
			default:
				t.Fatalf("%s document %d: unexpected kind %q", f, i, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, meta.Kind, err)
			}
		}
	}
	if m.daemonSet == nil || m.configMap == nil || m.service == nil || m.serviceAccount == nil {
		t.Fatalf("%s: want a DaemonSet, ConfigMap, Service and ServiceAccount, got %+v", a.dir, m)
	}
	return m
}

// The manifests decode strictly and say what a node agent must: no
// namespace of their own, the host network, the node name from the
// downward API, exactly the capabilities tc mode needs, a read-only root,
// bpffs and cgroup2 mounts with pin_path inside the bpffs one, tolerations
// for every node, the image `make image` builds, and a Service on the
// Prometheus port.
func TestManifests(t *testing.T) {
	version := os.Getenv("PKTSTAT_VERSION")
	if version == "" {
		t.Fatal("PKTSTAT_VERSION is not set: run through `make test-deploy` or `make test-deploy-unit`")
	}
	for _, a := range agents {
		t.Run(a.name, func(t *testing.T) {
			m := a.load(t)
			for _, o := range []string{m.daemonSet.Namespace, m.configMap.Namespace, m.service.Namespace, m.serviceAccount.Namespace} {
				if o != "" {
					t.Errorf("namespace %q set in a manifest: they must apply to any namespace", o)
				}
			}
			spec := m.daemonSet.Spec.Template.Spec
			if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostNetwork %v dnsPolicy %q, want the host network", spec.HostNetwork, spec.DNSPolicy)
			}
			if spec.ServiceAccountName != m.serviceAccount.Name {
				t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, m.serviceAccount.Name)
			}
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
				t.Errorf("tolerations %+v, want one that tolerates every taint", spec.Tolerations)
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(spec.Containers))
			}
			c := spec.Containers[0]
			if want := "localhost/pktstat-bpf/" + a.image + ":" + version; c.Image != want {
				t.Errorf("image %q, want %q (what make image builds)", c.Image, want)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
				sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Fatalf("securityContext %+v, want a read-only root, no privilege escalation, explicit capabilities", sc)
			}
			caps := slices.Clone(sc.Capabilities.Add)
			slices.Sort(caps)
			if !slices.Equal(caps, []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("capabilities %+v, want all dropped and BPF, NET_ADMIN, PERFMON added (no SYS_ADMIN in tc mode)", sc.Capabilities)
			}
			var nodeName bool
			for _, e := range c.Env {
				if e.Name == "K8S_NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
					nodeName = true
				}
			}
			if !nodeName {
				t.Errorf("no K8S_NODE_NAME from the downward API's spec.nodeName in %+v", c.Env)
			}
			mounts := map[string]string{} // mountPath -> hostPath or configMap name
			for _, vm := range c.VolumeMounts {
				for _, v := range spec.Volumes {
					switch {
					case v.Name != vm.Name:
					case v.HostPath != nil:
						mounts[vm.MountPath] = v.HostPath.Path
					case v.ConfigMap != nil:
						mounts[vm.MountPath] = "configmap:" + v.ConfigMap.Name
					}
				}
			}
			if mounts["/sys/fs/bpf"] != "/sys/fs/bpf" || mounts["/sys/fs/cgroup"] != "/sys/fs/cgroup" {
				t.Errorf("mounts %v, want the node's /sys/fs/bpf and /sys/fs/cgroup", mounts)
			}
			config := m.configMap.Data[a.configKey]
			if !strings.Contains(config, a.pinPath) || !strings.HasPrefix(a.pinPath, "/sys/fs/bpf/") {
				t.Errorf("the ConfigMap's %s does not set pin_path %s under the bpffs mount", a.configKey, a.pinPath)
			}
			limit := c.Resources.Limits.Memory()
			if limit.IsZero() {
				t.Errorf("no memory limit")
			}
			checkGoMemLimit(t, c.Env, limit.Value())
			if len(m.service.Spec.Ports) != 1 || m.service.Spec.Ports[0].Port != a.promPort || m.service.Spec.ClusterIP != corev1.ClusterIPNone ||
				len(c.Ports) != 1 || c.Ports[0].ContainerPort != a.promPort || m.service.Spec.Ports[0].TargetPort.StrVal != c.Ports[0].Name {
				t.Errorf("service %+v / container ports %+v, want a headless service on the container's port %d", m.service.Spec, c.Ports, a.promPort)
			}
			for k, v := range m.service.Spec.Selector {
				if m.daemonSet.Spec.Template.Labels[k] != v {
					t.Errorf("service selector %s=%s does not select the DaemonSet's pods", k, v)
				}
			}
		})
	}
}

// checkGoMemLimit: the container sets GOMEMLIMIT, in Go's syntax, to 50-90%
// of its memory limit, so that the Go heap is collected before the
// container is killed and the rest of the limit is left to the kernel's
// charges and the non-heap memory.
func checkGoMemLimit(t *testing.T, env []corev1.EnvVar, limit int64) {
	t.Helper()
	i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
	if i < 0 {
		t.Errorf("no GOMEMLIMIT in %+v", env)
		return
	}
	v := env[i].Value
	var n int64
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}} {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				t.Errorf("GOMEMLIMIT %q: %v", v, err)
				return
			}
			n = x << u.shift
			break
		}
	}
	if n*10 < limit*5 || n*10 > limit*9 {
		t.Errorf("GOMEMLIMIT %q (%d bytes) is not 50-90%% of the memory limit (%d bytes)", v, n, limit)
	}
}
