package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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

// outputFlag registers -o with the formats a verb supports; the first is the default.
func outputFlag(fs *flag.FlagSet, formats ...string) *string {
	return fs.String("o", formats[0], "output format: "+strings.Join(formats, ", "))
}

// checkOutput reports a usage error when got is not one of formats.
func checkOutput(got string, formats ...string) error {
	for _, f := range formats {
		if got == f {
			return nil
		}
	}
	return usagef("-o %s: want one of %s", got, strings.Join(formats, ", "))
}

// protoJSON marshals m with the proto field names, the same keys the plan
// and inventory YAML files use. protojson randomizes whitespace on
// purpose, so the result is compacted: stable for scripts and golden files.
func protoJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
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
