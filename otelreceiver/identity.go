package pktstatbpfreceiver

import (
	"slices"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// identityAttrs name the workload behind a flow. The semantic conventions
// put them on the resource, and that is where the k8sattributes processor
// associates pods (pod_association from resource_attribute k8s.pod.uid),
// so the receiver moves them there: one ResourceMetrics per identity.
var identityAttrs = []string{metadata.AttrContainerID, metadata.AttrK8sPodUID, metadata.AttrProcessPID, metadata.AttrProcessComm}

// identityDimensions are the dimensions that fill identityAttrs.
var identityDimensions = []aggregate.Dimension{aggregate.DimContainerID, aggregate.DimPodUID, aggregate.DimPID, aggregate.DimComm}

// hasIdentity reports whether dims keep any identity dimension.
func hasIdentity(dims []aggregate.Dimension) bool {
	return slices.ContainsFunc(dims, func(d aggregate.Dimension) bool { return slices.Contains(identityDimensions, d) })
}

// splitByIdentity moves every flow data point that carries identity
// attributes to a ResourceMetrics of its own identity: the host's resource
// attributes plus the identity's, in the same scope and metric. Points
// without an identity, and the self-metrics, stay on the host's resource.
// Identities come after the host's resource, in the order of their key.
func splitByIdentity(md pmetric.Metrics) pmetric.Metrics {
	if md.ResourceMetrics().Len() != 1 {
		return md
	}
	host := md.ResourceMetrics().At(0)
	type target struct {
		rm      pmetric.ResourceMetrics
		metrics map[string]pmetric.Metric // by scope index and name
	}
	byID := map[string]*target{}
	var ids []string
	for i := 0; i < host.ScopeMetrics().Len(); i++ {
		sm := host.ScopeMetrics().At(i)
		for j := 0; j < sm.Metrics().Len(); j++ {
			m := sm.Metrics().At(j)
			if m.Type() != pmetric.MetricTypeSum {
				continue
			}
			m.Sum().DataPoints().RemoveIf(func(dp pmetric.NumberDataPoint) bool {
				key, ok := identityKey(dp.Attributes())
				if !ok {
					return false
				}
				tg := byID[key]
				if tg == nil {
					tg = &target{rm: pmetric.NewResourceMetrics(), metrics: map[string]pmetric.Metric{}}
					host.Resource().CopyTo(tg.rm.Resource())
					for _, a := range identityAttrs {
						if v, ok := dp.Attributes().Get(a); ok {
							v.CopyTo(tg.rm.Resource().Attributes().PutEmpty(a))
						}
					}
					byID[key] = tg
					ids = append(ids, key)
				}
				mkey := string(rune('0'+i)) + m.Name()
				dst, ok := tg.metrics[mkey]
				if !ok {
					for tg.rm.ScopeMetrics().Len() <= i {
						sm.Scope().CopyTo(tg.rm.ScopeMetrics().AppendEmpty().Scope())
					}
					dst = tg.rm.ScopeMetrics().At(i).Metrics().AppendEmpty()
					dst.SetName(m.Name())
					dst.SetDescription(m.Description())
					dst.SetUnit(m.Unit())
					dst.SetEmptySum().SetIsMonotonic(m.Sum().IsMonotonic())
					dst.Sum().SetAggregationTemporality(m.Sum().AggregationTemporality())
					tg.metrics[mkey] = dst
				}
				out := dst.Sum().DataPoints().AppendEmpty()
				dp.CopyTo(out)
				for _, a := range identityAttrs {
					out.Attributes().Remove(a)
				}
				return true
			})
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		byID[id].rm.MoveTo(md.ResourceMetrics().AppendEmpty())
	}
	return md
}

// identityKey joins the identity attributes a point carries; ok is false
// when it carries none.
func identityKey(attrs pcommon.Map) (string, bool) {
	var b strings.Builder
	ok := false
	for _, a := range identityAttrs {
		b.WriteString("\x00")
		if v, has := attrs.Get(a); has {
			b.WriteString(v.AsString())
			ok = true
		}
	}
	return b.String(), ok
}
