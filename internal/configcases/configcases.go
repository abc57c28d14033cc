// Package configcases holds the bad configurations that both agents must
// reject with the same message, in the agents' own syntax.
package configcases

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

//go:embed invalid.json
var invalidJSON []byte

// Case is one bad configuration: the keys as both agents spell them, and
// the error both must return, one line per mistake.
type Case struct {
	Name   string         `json:"name"`
	Config map[string]any `json:"config"`
	Error  []string       `json:"error"`
}

// Message is the error text: aggregate.Validate joins one line per mistake.
func (c Case) Message() string { return strings.Join(c.Error, "\n") }

// Invalid returns every case. Whole numbers are ints, as YAML and TOML
// decoders produce them, not JSON's float64.
func Invalid() ([]Case, error) {
	var cases []Case
	if err := json.Unmarshal(invalidJSON, &cases); err != nil {
		return nil, fmt.Errorf("parse invalid.json: %w", err)
	}
	for i := range cases {
		cases[i].Config = normalize(cases[i].Config).(map[string]any)
	}
	return cases, nil
}

func normalize(v any) any {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) {
			return int(x)
		}
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalize(x[k])
		}
	}
	return v
}

// TOML writes keys as the body of a TOML table, one key per line, in key
// order; nested maps become inline tables.
func TOML(keys map[string]any) (string, error) {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		v, err := tomlValue(keys[k])
		if err != nil {
			return "", fmt.Errorf("key %s: %w", k, err)
		}
		fmt.Fprintf(&b, "  %s = %s\n", k, v)
	}
	return b.String(), nil
}

func tomlValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		// A Go quoted string is a TOML basic string for the ASCII text
		// the cases use.
		return strconv.Quote(x), nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return strconv.Itoa(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := tomlValue(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	case map[string]any:
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			s, err := tomlValue(x[k])
			if err != nil {
				return "", err
			}
			parts = append(parts, k+" = "+s)
		}
		return "{ " + strings.Join(parts, ", ") + " }", nil
	}
	return "", fmt.Errorf("no TOML form for %T", v)
}
