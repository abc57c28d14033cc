package metadata

import "go.opentelemetry.io/collector/pdata/pcommon"

// ResourceBuilder builds the resource that identifies the host and the capture.
type ResourceBuilder struct {
	config ResourceAttributesConfig
	res    pcommon.Resource
}

// NewResourceBuilder returns a builder that sets only the enabled attributes.
func NewResourceBuilder(rac ResourceAttributesConfig) *ResourceBuilder {
	return &ResourceBuilder{config: rac, res: pcommon.NewResource()}
}

// SetHostName sets host.name.
func (rb *ResourceBuilder) SetHostName(v string) {
	if rb.config.HostName.Enabled {
		rb.res.Attributes().PutStr(ResourceAttrHostName, v)
	}
}

// SetCaptureMode sets pktstatbpf.capture.mode (tc, xdp, cgroup, kprobe).
func (rb *ResourceBuilder) SetCaptureMode(v string) {
	if rb.config.CaptureMode.Enabled {
		rb.res.Attributes().PutStr(ResourceAttrCaptureMode, v)
	}
}

// SetK8sNodeName sets k8s.node.name.
func (rb *ResourceBuilder) SetK8sNodeName(v string) {
	if rb.config.K8sNodeName.Enabled {
		rb.res.Attributes().PutStr(ResourceAttrK8sNodeName, v)
	}
}

// Emit returns the resource and resets the builder.
func (rb *ResourceBuilder) Emit() pcommon.Resource {
	r := rb.res
	rb.res = pcommon.NewResource()
	return r
}
