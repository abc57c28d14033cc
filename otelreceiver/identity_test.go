package pktstatbpfreceiver

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// Two processes in two cgroups laid out as kubelet lays out a containerd
// pod and a CRI-O pod: the receiver emits one ResourceMetrics per pod, with
// k8s.pod.uid, container.id, process.pid and the node name on the resource
// (where k8sattributes associates pods), and each pod's flow carries exactly
// its traffic. Flows without a workload (the kernel's own) stay on the
// host's resource.
func TestReceiverWorkloadIdentityOnTheResource(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	t.Setenv("K8S_NODE_NAME", "pktstat-test-node")
	p := nettest.NewPair(t)
	root := filepath.Join(cgroup2Mount(t), "pktstat-otel-pods-"+filepath.Base(t.TempDir()))
	type pod struct {
		runtime, uid, cid string
		port              uint16
		n, size           int
		dir               string
		pid               int
	}
	pods := []*pod{
		{runtime: "cri-containerd", uid: "1a2b3c4d-0000-4000-8000-00000000beef", cid: strings.Repeat("0a", 32), port: 9501, n: 13, size: 200},
		{runtime: "crio", uid: "5e6f7a8b-1111-4111-9111-00000000cafe", cid: strings.Repeat("1b", 32), port: 9502, n: 21, size: 400},
	}
	for _, pd := range pods {
		pd.dir = filepath.Join(root, "kubepods.slice", "kubepods-besteffort.slice",
			"kubepods-besteffort-pod"+strings.ReplaceAll(pd.uid, "-", "_")+".slice", pd.runtime+"-"+pd.cid+".scope")
		require.NoError(t, os.MkdirAll(pd.dir, 0o755))
	}
	t.Cleanup(func() {
		// Leaves first: a cgroup directory is removed only when empty.
		for _, pd := range pods {
			for d := pd.dir; d != root; d = filepath.Dir(d) {
				_ = os.Remove(d)
			}
		}
		_ = os.Remove(root)
	})

	cfg := createDefaultConfig().(*Config)
	cfg.Mode = "cgroup"
	cfg.CgroupPath = root
	cfg.InitialDelay = 0
	cfg.CollectionInterval = time.Hour
	cfg.Dimensions = append(cfg.Dimensions, aggregate.DimPodUID, aggregate.DimContainerID, aggregate.DimPID)
	require.NoError(t, cfg.Validate())
	sink, shutdown := startInProcess(t, cfg)
	for _, pd := range pods {
		rx := nettest.ListenUDP(t, p.NSPathB(), p.B4, pd.port)
		pd.pid = startSender(t, p.NSA, pd.dir, netip.AddrPortFrom(p.A4, pd.port+1000), netip.AddrPortFrom(p.B4, pd.port), pd.n, pd.size)
		rx.Wait(t, pd.n)
	}
	shutdown()

	mds := sink.AllMetrics()
	require.NotEmpty(t, mds)
	md := mds[len(mds)-1]
	host, _ := os.Hostname()
	type flow struct{ packets, bytes int64 }
	byPod := map[string]flow{}
	resources := map[string]map[string]any{}
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		res := rm.Resource().Attributes().AsRaw()
		uid, _ := res[metadata.AttrK8sPodUID].(string)
		eachFlowPoint(rm, func(m pmetric.Metric, dp pmetric.NumberDataPoint) {
			for _, a := range identityAttrs {
				_, on := dp.Attributes().Get(a)
				assert.False(t, on, "%s on a data point, not the resource", a)
			}
			if uid == "" {
				return
			}
			resources[uid] = res
			f := byPod[uid]
			if m.Name() == metadata.MetricPktstatbpfNetworkFlowPackets {
				f.packets += dp.IntValue()
			} else {
				f.bytes += dp.IntValue()
			}
			byPod[uid] = f
		})
	}
	for _, pd := range pods {
		assert.Equal(t, flow{int64(pd.n), int64(pd.n * (20 + 8 + pd.size))}, byPod[pd.uid], "pod %s (%s)", pd.uid, pd.runtime)
		assert.Equal(t, map[string]any{
			"host.name": host, "pktstatbpf.capture.mode": "cgroup", "k8s.node.name": "pktstat-test-node",
			"k8s.pod.uid": pd.uid, "container.id": pd.cid, "process.pid": int64(pd.pid),
		}, resources[pd.uid], "resource of pod %s", pd.uid)
	}
	assert.Len(t, byPod, len(pods), "one resource per pod")
}

// eachFlowPoint calls fn for every point of the flow byte and packet metrics of rm.
func eachFlowPoint(rm pmetric.ResourceMetrics, fn func(pmetric.Metric, pmetric.NumberDataPoint)) {
	for j := 0; j < rm.ScopeMetrics().Len(); j++ {
		ms := rm.ScopeMetrics().At(j).Metrics()
		for k := 0; k < ms.Len(); k++ {
			m := ms.At(k)
			if m.Name() != metadata.MetricPktstatbpfNetworkFlowPackets && m.Name() != metadata.MetricPktstatbpfNetworkFlowBytes {
				continue
			}
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				fn(m, m.Sum().DataPoints().At(l))
			}
		}
	}
}
