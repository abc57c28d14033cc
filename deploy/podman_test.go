package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// podmanRun turns the DaemonSet's container spec into a podman command
// line, field by field, so that what the test runs is what the cluster
// would: the image and args, env (the downward API's fields given the
// test's values), the user, capabilities, read-only root, no privilege
// escalation, the memory limit, and every volume. The host network is the
// test's namespace A; the node's bpffs is the test's own bpffs mount; the
// ConfigMap is written to files. A container field this does not translate
// fails the test rather than being left out.
func podmanRun(t *testing.T, m manifests, name, nsPath, bpffs, configDir string, fieldValues map[string]string) []string {
	t.Helper()
	spec := m.daemonSet.Spec.Template.Spec
	c := spec.Containers[0]
	rest := c
	rest.Name, rest.Image, rest.ImagePullPolicy, rest.Args, rest.Env, rest.Ports, rest.Resources, rest.SecurityContext, rest.VolumeMounts =
		"", "", "", nil, nil, nil, corev1.ResourceRequirements{}, nil, nil
	if !reflect.DeepEqual(rest, corev1.Container{}) {
		t.Fatalf("the container spec sets fields podmanRun does not translate: %+v", rest)
	}
	if !spec.HostNetwork {
		t.Fatal("the DaemonSet does not use the host network, which the test stands in for with namespace A")
	}
	args := []string{"--runtime", "/usr/sbin/runc", "run", "--rm", "--name", name, "--network", "ns:" + nsPath,
		// The machine forbids raising rlimits, which podman's defaults try.
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("env %s: only fieldRef values are translated", e.Name)
			}
			var ok bool
			if v, ok = fieldValues[e.ValueFrom.FieldRef.FieldPath]; !ok {
				t.Fatalf("env %s: no test value for the downward API field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		args = append(args, "--env", e.Name+"="+v)
	}
	sc := c.SecurityContext
	if sc.RunAsUser != nil {
		args = append(args, "--user", strconv.FormatInt(*sc.RunAsUser, 10))
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if sp := sc.SeccompProfile; sp != nil {
		if sp.Type != corev1.SeccompProfileTypeUnconfined {
			t.Fatalf("seccompProfile %s: only Unconfined is translated", sp.Type)
		}
		args = append(args, "--security-opt", "seccomp=unconfined")
	}
	for _, d := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(string(d)))
	}
	for _, a := range sc.Capabilities.Add {
		args = append(args, "--cap-add", "CAP_"+string(a))
	}
	if mem := c.Resources.Limits.Memory(); !mem.IsZero() {
		args = append(args, "--memory", strconv.FormatInt(mem.Value(), 10))
	}
	for _, vm := range c.VolumeMounts {
		var v *corev1.Volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == vm.Name {
				v = &spec.Volumes[i]
			}
		}
		if v == nil {
			t.Fatalf("volume mount %s has no volume", vm.Name)
		}
		var src string
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != m.configMap.Name {
				t.Fatalf("volume %s names ConfigMap %s, the manifests hold %s", v.Name, v.ConfigMap.Name, m.configMap.Name)
			}
			src = configDir
		case v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf":
			src = bpffs
		case v.HostPath != nil:
			src = v.HostPath.Path
		default:
			t.Fatalf("volume %s: only configMap and hostPath volumes are translated", v.Name)
		}
		opt := src + ":" + vm.MountPath
		if vm.ReadOnly {
			opt += ":ro"
		}
		args = append(args, "--volume", opt)
	}
	args = append(args, c.Image)
	return append(args, c.Args...)
}

// Each image, run under podman with its DaemonSet's container spec and its
// ConfigMap's config, counts the traffic the test sends over the veth
// exactly, serves it on the Prometheus port, and leaves its counters pinned
// when stopped.
func TestImagesRunTheDaemonSetSpec(t *testing.T) {
	nettest.RequireBPF(t)
	if testing.Short() {
		t.Skip("runs the images under podman; skipped in -short mode")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman is missing: run `make deps`: %v", err)
	}
	for _, a := range agents {
		t.Run(a.name, func(t *testing.T) {
			m := a.load(t)
			p := nettest.NewPair(t)
			bpffs := nettest.BPFFS(t)
			configDir := t.TempDir()
			// The only change to the ConfigMap's config: namespace A has no
			// default route (tests never add one), so name its interface.
			config := m.configMap.Data[a.configKey]
			if strings.Count(config, a.modeLine) != 1 {
				t.Fatalf("the ConfigMap's config has no single %q line to add interfaces after", a.modeLine)
			}
			config = strings.Replace(config, a.modeLine, a.modeLine+fmt.Sprintf(a.interfacesLine, p.IfA), 1)
			if err := os.WriteFile(filepath.Join(configDir, a.configKey), []byte(config), 0o644); err != nil {
				t.Fatal(err)
			}
			name := "pktstat-test-" + filepath.Base(configDir)
			args := podmanRun(t, m, name, p.NSPathA(), bpffs, configDir,
				map[string]string{"spec.nodeName": "pktstat-test-node", "status.podIP": "127.0.0.1"})
			ctr := startContainer(t, name, args)
			url := fmt.Sprintf("http://127.0.0.1:%d/metrics", a.promPort)
			ctr.waitLog(t, a.readyLog)
			waitScrape(t, p.NSPathA(), url, ctr)

			flows := []struct {
				n, size int
				sport   uint16
				dport   uint16
			}{{60, 300, 42001, 7501}, {25, 900, 42002, 7502}}
			before := p.LinkStats(t, p.NSA, p.IfA)
			for _, f := range flows {
				p.SendUDP(t, f.n, f.size, f.sport, f.dport, false)
			}
			link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
			var sumP, sumB int64
			for _, f := range flows {
				want := [2]int64{int64(f.n), int64(f.n * nettest.UDPFrameLen(f.size, false))}
				sumP, sumB = sumP+want[0], sumB+want[1]
				labels := a.flowLabels(p.IfA, p.A4.String(), p.B4.String(), f.sport, f.dport)
				deadline := time.Now().Add(30 * time.Second)
				var got [2]int64
				var text string
				for {
					text = scrape(t, p.NSPathA(), url)
					got = [2]int64{promValue(text, a.packetsMetric(), labels), promValue(text, a.bytesMetric(), labels)}
					if got == want || time.Now().After(deadline) {
						break
					}
					time.Sleep(500 * time.Millisecond)
				}
				if got != want {
					t.Errorf("flow %d->%d: %v packets/bytes served, want %v; %s samples served:\n%s", f.sport, f.dport, got, want,
						a.packetsMetric(), grepLines(text, "pktstat"))
				}
			}
			if uint64(sumP) != link.TxPackets || uint64(sumB) != link.TxBytes {
				t.Errorf("the veth sent %d packets %d bytes, the test %d and %d", link.TxPackets, link.TxBytes, sumP, sumB)
			}
			rss := containerRSS(t, name)
			t.Logf("%s: peak RSS %d KiB with a few flows", a.name, rss)

			if out, err := exec.Command("podman", "stop", "--time", "20", name).CombinedOutput(); err != nil {
				t.Fatalf("podman stop: %v: %s", err, out)
			}
			<-ctr.exited
			// pin_path: the programs stay attached and counting after the pod is gone.
			if got := nettest.TCXPrograms(t, p.NSPathA(), p.IfA); got != 2 {
				t.Errorf("%d TCX programs after the container stopped, want 2 pinned\n%s", got, ctr.logs.String())
			}
			pins, _ := filepath.Glob(filepath.Join(bpffs, strings.TrimPrefix(a.pinPath, "/sys/fs/bpf/"), "*", "tcx-*"))
			if len(pins) != 2 {
				t.Errorf("pinned links %v, want 2 under the bpffs mount", pins)
			}
		})
	}
}

func (a agent) packetsMetric() string {
	if a.image == "telegraf" {
		return "pktstat_bpf_packets"
	}
	return flowPacketsMetric
}

func (a agent) bytesMetric() string {
	if a.image == "telegraf" {
		return "pktstat_bpf_bytes"
	}
	return flowBytesMetric
}

// The collector's flow metrics as its Prometheus exporter names them.
const (
	flowPacketsMetric = "pktstatbpf_network_flow_packets_total"
	flowBytesMetric   = "pktstatbpf_network_flow_bytes_total"
)

func (a agent) flowLabels(iface, src, dst string, sport, dport uint16) map[string]string {
	if a.image == "telegraf" {
		return map[string]string{"interface": iface, "direction": "egress", "proto": "udp", "src_ip": src, "dst_ip": dst,
			"src_port": fmt.Sprint(sport), "dst_port": fmt.Sprint(dport), "node": "pktstat-test-node"}
	}
	return map[string]string{"network_interface_name": iface, "network_io_direction": "transmit", "network_transport": "udp",
		"source_address": src, "destination_address": dst, "source_port": fmt.Sprint(sport), "destination_port": fmt.Sprint(dport)}
}

// container is a `podman run` the test started; t.Cleanup removes it.
type container struct {
	logs   lockedBuffer
	exited chan struct{}
	err    error
}

func startContainer(t *testing.T, name string, args []string) *container {
	t.Helper()
	c := &container{exited: make(chan struct{})}
	cmd := exec.Command("podman", args...)
	cmd.Stdout, cmd.Stderr = &c.logs, &c.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		_ = exec.Command("podman", "rm", "--force", "--time", "5", name).Run()
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("podman run %s did not exit", name)
		}
	})
	return c
}

// waitLog waits until the container's output contains s.
func (c *container) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(c.logs.String(), s) {
		select {
		case <-c.exited:
			t.Fatalf("the container exited (%v) before logging %q:\n%s", c.err, s, c.logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container did not log %q within 90s:\n%s", s, c.logs.String())
		}
	}
}

// waitScrape waits until the endpoint answers inside the namespace.
func waitScrape(t *testing.T, nsPath, url string, c *container) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := get(nsPath, url); err == nil {
			return
		}
		select {
		case <-c.exited:
			t.Fatalf("the container exited (%v) before serving %s:\n%s", c.err, url, c.logs.String())
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 90s:\n%s", url, c.logs.String())
		}
	}
}

// get fetches url from inside the namespace (the endpoint listens on its
// loopback). The connection is dialled on the namespace's thread: the HTTP
// transport would dial from another goroutine, in another namespace.
func get(nsPath, url string) (string, error) {
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.Index(host, "/")]
	var conn net.Conn
	if err := nettest.Do(nsPath, func() (err error) {
		conn, err = net.DialTimeout("tcp", host, 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func scrape(t *testing.T, nsPath, url string) string {
	t.Helper()
	body, err := get(nsPath, url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return body
}

// promValue returns the value of the sample of metric whose labels include
// want, or -1.
func promValue(text, metric string, want map[string]string) int64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		labels := map[string]string{}
		for _, kv := range splitLabels(line[len(metric)+1 : end]) {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(line[end+1:])[0], 64)
		if err != nil {
			return -1
		}
		return int64(f)
	}
	return -1
}

// grepLines returns the lines of text that contain substr.
func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// splitLabels splits a label list at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// containerRSS reads the peak resident set of the container's main process.
func containerRSS(t *testing.T, name string) int64 {
	t.Helper()
	out, err := exec.Command("podman", "inspect", "--format", "{{.State.Pid}}", name).Output()
	if err != nil {
		t.Fatalf("podman inspect %s: %v", name, err)
	}
	status, err := os.ReadFile("/proc/" + strings.TrimSpace(string(out)) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
