package metadata

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// metadataFile is the part of mdatagen's schema this receiver uses.
type metadataFile struct {
	Type   string `yaml:"type"`
	Status struct {
		Class                string              `yaml:"class"`
		Stability            map[string][]string `yaml:"stability"`
		Distributions        []string            `yaml:"distributions"`
		UnsupportedPlatforms []string            `yaml:"unsupported_platforms"`
	} `yaml:"status"`
	SemConvVersion     string `yaml:"sem_conv_version"`
	ResourceAttributes map[string]struct {
		Description string   `yaml:"description"`
		Type        string   `yaml:"type"`
		Enum        []string `yaml:"enum"`
		Enabled     *bool    `yaml:"enabled"`
	} `yaml:"resource_attributes"`
	Attributes map[string]struct {
		Description      string   `yaml:"description"`
		Type             string   `yaml:"type"`
		Enum             []string `yaml:"enum"`
		RequirementLevel string   `yaml:"requirement_level"`
	} `yaml:"attributes"`
	Metrics map[string]struct {
		Enabled     *bool  `yaml:"enabled"`
		Stability   string `yaml:"stability"`
		Description string `yaml:"description"`
		Unit        string `yaml:"unit"`
		Sum         *struct {
			ValueType   string `yaml:"value_type"`
			Monotonic   *bool  `yaml:"monotonic"`
			Temporality string `yaml:"aggregation_temporality"`
		} `yaml:"sum"`
		Gauge *struct {
			ValueType string `yaml:"value_type"`
		} `yaml:"gauge"`
		Histogram *struct {
			ValueType   string    `yaml:"value_type"`
			Temporality string    `yaml:"aggregation_temporality"`
			Bounds      []float64 `yaml:"bucket_boundaries"`
		} `yaml:"histogram"`
		Attributes []string `yaml:"attributes"`
	} `yaml:"metrics"`
}

var allDefs = []metricDef{
	defPktstatbpfNetworkFlowBytes, defPktstatbpfNetworkFlowPackets, defPktstatbpfNetworkFlowTCPRetransmits, defPktstatbpfNetworkFlowTCPFlags,
	defPktstatbpfNetworkFlowDropPackets, defPktstatbpfNetworkFlowDropBytes, defPktstatbpfNetworkFlowTCPRTT,
	defFlowCount, defFlowLimit, defKernelMemoryUsage, defFlowExpired, defOverflowPackets, defOverflowBytes, defDrainDuration, defHookCount, defHookNotFirst,
}

func readMetadata(t *testing.T) metadataFile {
	t.Helper()
	b, err := os.ReadFile("../../metadata.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var md metadataFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&md); err != nil {
		t.Fatalf("metadata.yaml: %v", err)
	}
	return md
}

// enabledByDefault reads DefaultMetricsConfig by the metrics' config keys.
func enabledByDefault(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	v := reflect.ValueOf(DefaultMetricsConfig())
	for i := range v.NumField() {
		out[v.Type().Field(i).Tag.Get("mapstructure")] = v.Field(i).FieldByName("Enabled").Bool()
	}
	return out
}

// TestMetadataYAMLMatchesCode: metadata.yaml is complete in mdatagen's schema
// and says what the hand-written builder does.
func TestMetadataYAMLMatchesCode(t *testing.T) {
	md := readMetadata(t)
	if md.Type != Type.String() || md.Status.Class != "receiver" || !slices.Equal(md.Status.Stability[strings.ToLower(MetricsStability.String())], []string{"metrics"}) {
		t.Errorf("type/status: %q %q %v", md.Type, md.Status.Class, md.Status.Stability)
	}
	if len(md.Status.Distributions) == 0 || len(md.Status.UnsupportedPlatforms) == 0 || md.SemConvVersion == "" {
		t.Errorf("status.distributions %v, status.unsupported_platforms %v, sem_conv_version %q must be set",
			md.Status.Distributions, md.Status.UnsupportedPlatforms, md.SemConvVersion)
	}
	enabled := enabledByDefault(t)
	if len(md.Metrics) != len(allDefs) || len(enabled) != len(allDefs) {
		t.Errorf("%d metrics in metadata.yaml, %d in the config, %d in the builder", len(md.Metrics), len(enabled), len(allDefs))
	}
	flowAttrs := append(slices.Clone(SelectableFlowAttributes), AttrOverflow, AttrFiltered, AttrOther)
	for _, def := range allDefs {
		m, ok := md.Metrics[def.name]
		if !ok {
			t.Errorf("%s: not in metadata.yaml", def.name)
			continue
		}
		if m.Description != def.description || m.Unit != def.unit {
			t.Errorf("%s: metadata.yaml says %q in %q, the builder %q in %q", def.name, m.Description, m.Unit, def.description, def.unit)
		}
		if m.Enabled == nil || *m.Enabled != enabled[def.name] {
			t.Errorf("%s: enabled %v in metadata.yaml, %v by default", def.name, m.Enabled, enabled[def.name])
		}
		switch m.Stability {
		case "development", "alpha", "beta", "stable":
		default:
			t.Errorf("%s: stability %q", def.name, m.Stability)
		}
		switch def.kind {
		case kindSumInt, kindUpDownInt:
			if m.Sum == nil || m.Sum.ValueType != "int" || m.Sum.Monotonic == nil || *m.Sum.Monotonic != (def.kind == kindSumInt) || m.Sum.Temporality != "cumulative" {
				t.Errorf("%s: want an int sum, monotonic %t, cumulative: %+v", def.name, def.kind == kindSumInt, m.Sum)
			}
		case kindGaugeDouble:
			if m.Gauge == nil || m.Gauge.ValueType != "double" {
				t.Errorf("%s: want a double gauge: %+v", def.name, m.Gauge)
			}
		case kindHistogram:
			if m.Histogram == nil || m.Histogram.ValueType != "double" || m.Histogram.Temporality != "cumulative" || !slices.Equal(m.Histogram.Bounds, RTTBoundsSeconds()) {
				t.Errorf("%s: want a double cumulative histogram with bounds %v: %+v", def.name, RTTBoundsSeconds(), m.Histogram)
			}
		}
		for _, a := range m.Attributes {
			if _, ok := md.Attributes[a]; !ok {
				t.Errorf("%s: attribute %s is not defined", def.name, a)
			}
		}
	}
	for _, fm := range DefaultMetricsBuilderConfig().FlowMetrics() {
		want := flowAttrs
		if fm.Name == MetricPktstatbpfNetworkFlowTCPFlags {
			want = append(slices.Clone(flowAttrs), AttrTCPFlag)
		}
		if fm.Name == MetricPktstatbpfNetworkFlowDropPackets || fm.Name == MetricPktstatbpfNetworkFlowDropBytes {
			want = append(slices.Clone(flowAttrs), AttrDropReason)
		}
		if got := md.Metrics[fm.Name].Attributes; !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%s: attributes\n%v\nwant\n%v", fm.Name, got, want)
		}
	}
	if a := md.Attributes[AttrTCPFlag]; !slices.Equal(a.Enum, []string{AttributeTCPFlagSyn, AttributeTCPFlagSynack, AttributeTCPFlagFin, AttributeTCPFlagRst}) {
		t.Errorf("%s: enum %v", AttrTCPFlag, a.Enum)
	}
	if got := md.Metrics[MetricPktstatbpfHookCount].Attributes; !slices.Equal(got, []string{AttrHookState}) {
		t.Errorf("%s: attributes %v", MetricPktstatbpfHookCount, got)
	}
	if a := md.Attributes[AttrHookState]; !slices.Equal(a.Enum, []string{AttributeHookStateAttached, AttributeHookStateFailed}) {
		t.Errorf("%s: enum %v", AttrHookState, a.Enum)
	}
	for name, a := range md.Attributes {
		switch a.RequirementLevel {
		case "required", "conditionally_required", "recommended", "opt_in":
		default:
			t.Errorf("attribute %s: requirement_level %q", name, a.RequirementLevel)
		}
	}
	if len(md.Attributes) != len(flowAttrs)+3 {
		t.Errorf("%d attributes in metadata.yaml, want the %d flow attributes, %s, %s and %s", len(md.Attributes), len(flowAttrs), AttrDropReason, AttrHookState, AttrTCPFlag)
	}
	for _, name := range []string{ResourceAttrHostName, ResourceAttrCaptureMode} {
		if a, ok := md.ResourceAttributes[name]; !ok || a.Enabled == nil || !*a.Enabled {
			t.Errorf("resource attribute %s: %+v", name, a)
		}
	}
}

// TestDocumentationFollowsMetadata: documentation.md has mdatagen's layout -
// default metrics, then optional ones under "Optional Metrics", each with its
// stability, and every attribute with its requirement level.
func TestDocumentationFollowsMetadata(t *testing.T) {
	md := readMetadata(t)
	b, err := os.ReadFile("../../documentation.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	defaults, optional, found := strings.Cut(doc, "\n## Optional Metrics\n")
	if !found || !strings.Contains(defaults, "\n## Default Metrics\n") {
		t.Fatal(`documentation.md needs "## Default Metrics" and "## Optional Metrics" sections`)
	}
	optional, _, _ = strings.Cut(optional, "\n## ")
	for name, m := range md.Metrics {
		section := defaults
		if !*m.Enabled {
			section = optional
		}
		_, after, ok := strings.Cut(section, "\n### "+name+"\n")
		if !ok {
			t.Errorf("%s: no section under the %s metrics", name, map[bool]string{true: "default", false: "optional"}[*m.Enabled])
			continue
		}
		after, _, _ = strings.Cut(after, "\n### ")
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(m.Unit) + ` \|.*\| ` + regexp.QuoteMeta(title(m.Stability)) + ` \|$`)
		if !strings.Contains(after, "| Stability |") || !row.MatchString(after) {
			t.Errorf("%s: no table row with unit %s and stability %s:\n%s", name, m.Unit, m.Stability, after)
		}
	}
	for name, a := range md.Attributes {
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(name) + ` \|.*\| ` + a.RequirementLevel + ` \|`)
		if !row.MatchString(doc) {
			t.Errorf("attribute %s: no table row with requirement level %s", name, a.RequirementLevel)
		}
	}
}

// title writes a stability level as mdatagen's tables do ("Alpha").
func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
