package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// resourceFormats are the -o values of every verb that prints resources:
// a table for people, a wider one, and the API's own JSON (as grpcurl
// prints it) or the same as YAML.
var resourceFormats = []string{"table", "wide", "json", "yaml"}

// outputValue is the -o flag: one of formats, checked as it is parsed so
// that a wrong value is a usage error that lists the right ones.
type outputValue struct {
	value   string
	formats []string
}

func (o *outputValue) String() string { return o.value }

func (o *outputValue) Set(v string) error {
	if !slices.Contains(o.formats, v) {
		return fmt.Errorf("want one of %s", strings.Join(o.formats, ", "))
	}
	o.value = v
	return nil
}

// outputFlag registers -o (--output) with the formats a verb supports;
// the first is the default. Verbs that print resources pass
// resourceFormats.
func outputFlag(fs *flag.FlagSet, formats ...string) *string {
	o := &outputValue{value: formats[0], formats: formats}
	fs.Var(o, "o", "output `format`: "+strings.Join(formats, ", "))
	return &o.value
}

// protoJSON marshals m as the API's JSON: camelCase keys, enum names,
// exactly what grpcurl prints for the same message. protojson randomizes
// whitespace on purpose, so the result is compacted: stable for scripts
// and golden files.
func protoJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeProto writes m as indented JSON or as YAML.
func writeProto(w io.Writer, format string, m proto.Message) error {
	j, err := protoJSON(m)
	if err != nil {
		return err
	}
	switch format {
	case "json":
		var b bytes.Buffer
		if err := json.Indent(&b, j, "", "  "); err != nil {
			return err
		}
		b.WriteByte('\n')
		_, err = w.Write(b.Bytes())
		return err
	case "yaml":
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// structured reports whether format prints the API's messages (json,
// yaml) rather than text for people (table, wide).
func structured(format string) bool { return format == "json" || format == "yaml" }

// writeItem writes one item of a stream: a JSON object on one line
// (JSON Lines, for jq -c), or a YAML document that starts with "---".
func writeItem(w io.Writer, format string, m proto.Message) error {
	j, err := protoJSON(m)
	if err != nil {
		return err
	}
	if format == "yaml" {
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "---\n%s", y)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", j)
	return err
}

// Enum names without their type prefix, as people read them.

func stageState(s outpostv1.StageState) string {
	if s == outpostv1.StageState_STAGE_STATE_UNSPECIFIED {
		return "-" // not started by the engine (a dry run)
	}
	return rolloutstate.StageName(s)
}

func stepName(s outpostv1.Step) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_"))
}

// labelsText renders labels as "k=v,k2=v2", sorted by key.
func labelsText(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// timeText renders a timestamp in UTC, the same on every machine; "-" when unset.
func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// byteSize renders a byte count for people ("5.0 MiB").
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
