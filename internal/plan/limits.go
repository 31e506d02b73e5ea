package plan

import (
	"github.com/outposthq/outpost/internal/analysis"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Size limits of a plan, all in bytes. Every string of a plan has one, so
// that a plan is refused whole, with the field named, when it is submitted:
// not half-way through storing its rollout (etcd refuses requests over
// 1.5 MiB), and not after the CLI read a 100 MB file into memory. The CLI
// checks them before it uploads anything and the control plane checks them
// again (it does not trust the CLI; a request over gRPC's default 4 MiB
// message size never reaches it). README.md's Plans section has the
// table; keep the two in step.
const (
	// MaxPlanBytes bounds the plan file and a plan sent to the control
	// plane (its protobuf encoding).
	MaxPlanBytes = 256 << 10
	// MaxHookBytes bounds each shell command: hooks.*, health.command,
	// strategy.switch_hook and strategy.switch_back_hook.
	MaxHookBytes = 16 << 10
	// MaxNameBytes bounds names used in keys, paths and logs: app,
	// environment, targets.datacenters, strategy.switch_node and stage
	// names (their pattern allows no more either).
	MaxNameBytes = 63
	// MaxLabelBytes bounds each label key and value of a selector.
	MaxLabelBytes = 63
	// MaxChangeIDBytes bounds change_id, free text for the audit log.
	MaxChangeIDBytes = 200
	// MaxPathBytes bounds artifact.path and deploy.path (Linux's PATH_MAX).
	MaxPathBytes = 4096
	// MaxHealthPathBytes bounds health.http.path.
	MaxHealthPathBytes = 1024
	// MaxURLBytes bounds notify.webhook.
	MaxURLBytes = 2048
	// MaxWordBytes bounds every other string: the choices (unpack, layout,
	// type, pause), durations, batches and min_free_bytes.
	MaxWordBytes = 64

	// MaxSelectorLabels bounds the labels of each selector.
	MaxSelectorLabels = 64
	// MaxDatacenters bounds targets.datacenters.
	MaxDatacenters = 64
	// MaxStages bounds the number of explicit stages.
	MaxStages = 50

	// MaxYAMLExpansion bounds what YAML anchors and aliases may make of a
	// document (a plan or an inventory): decoded, it may be at most this
	// many times its own size (plus yamlExpansionSlack). Without aliases
	// no document comes near it; with them a 160 KB file can otherwise
	// decode to gigabytes ("billion laughs" with one long string).
	MaxYAMLExpansion = 8
)

// yamlExpansionSlack lets small documents use aliases freely.
const yamlExpansionSlack = 64 << 10

// stringLimits is the limit of every string field of a PlanSpec, by its
// path in the schema (no list indexes). A map field's limit applies to its
// keys and its values. A test checks that every string field is listed;
// one that is not falls back to MaxWordBytes.
var stringLimits = map[string]int{
	"app":                         MaxNameBytes,
	"environment":                 MaxNameBytes,
	"change_id":                   MaxChangeIDBytes,
	"artifact.path":               MaxPathBytes,
	"artifact.unpack":             MaxWordBytes,
	"artifact.max_unpacked_bytes": MaxWordBytes,
	"artifact.signature":          MaxPathBytes,
	"targets.selector":            MaxLabelBytes,
	"targets.datacenters":         MaxNameBytes,
	"deploy.path":                 MaxPathBytes,
	"deploy.layout":               MaxWordBytes,
	"precheck.min_free_bytes":     MaxWordBytes,
	"hooks.before_install":        MaxHookBytes,
	"hooks.stop":                  MaxHookBytes,
	"hooks.after_install":         MaxHookBytes,
	"hooks.start":                 MaxHookBytes,
	"health.http.path":            MaxHealthPathBytes,
	"health.command":              MaxHookBytes,
	"health.timeout":              MaxWordBytes,
	"health.interval":             MaxWordBytes,
	"strategy.type":               MaxWordBytes,
	"strategy.batch":              MaxWordBytes,
	"strategy.bake":               MaxWordBytes,
	"strategy.pause":              MaxWordBytes,
	"strategy.switch_node":        MaxNameBytes,
	"strategy.switch_hook":        MaxHookBytes,
	"strategy.switch_back_hook":   MaxHookBytes,
	"strategy.stages.name":        MaxNameBytes,
	"strategy.stages.selector":    MaxLabelBytes,
	"strategy.stages.batch":       MaxWordBytes,
	"strategy.stages.bake":        MaxWordBytes,
	"strategy.stages.pause":       MaxWordBytes,
	"notify.webhook":              MaxURLBytes,

	"strategy.analysis.interval":                           MaxWordBytes,
	"strategy.analysis.on_failure":                         MaxWordBytes,
	"strategy.analysis.measurements.name":                  MaxNameBytes,
	"strategy.analysis.measurements.provider":              MaxNameBytes,
	"strategy.analysis.measurements.query":                 analysis.MaxQueryBytes,
	"strategy.analysis.measurements.baseline_query":        analysis.MaxQueryBytes,
	"strategy.analysis.measurements.success":               analysis.MaxConditionBytes,
	"strategy.analysis.measurements.failure":               analysis.MaxConditionBytes,
	"strategy.stages.analysis.interval":                    MaxWordBytes,
	"strategy.stages.analysis.on_failure":                  MaxWordBytes,
	"strategy.stages.analysis.measurements.name":           MaxNameBytes,
	"strategy.stages.analysis.measurements.provider":       MaxNameBytes,
	"strategy.stages.analysis.measurements.query":          analysis.MaxQueryBytes,
	"strategy.stages.analysis.measurements.baseline_query": analysis.MaxQueryBytes,
	"strategy.stages.analysis.measurements.success":        analysis.MaxConditionBytes,
	"strategy.stages.analysis.measurements.failure":        analysis.MaxConditionBytes,
}

// countLimits bounds the entries of every list and map field of a
// PlanSpec, by schema path. A test checks that every one is listed.
var countLimits = map[string]int{
	"targets.selector":                      MaxSelectorLabels,
	"targets.datacenters":                   MaxDatacenters,
	"strategy.stages":                       MaxStages,
	"strategy.stages.selector":              MaxSelectorLabels,
	"strategy.stages.analysis.measurements": MaxMeasurements,
	"strategy.analysis.measurements":        MaxMeasurements,
}

// checkLimits reports every field of spec over its size limit, and the
// plan itself when its encoding is over MaxPlanBytes. Errors give the
// size and the limit, never the value: it may be a megabyte.
func checkLimits(spec *outpostv1.PlanSpec) error {
	var p problems
	if n := proto.Size(spec); n > MaxPlanBytes {
		p.add("plan", "%d bytes: at most %d", n, MaxPlanBytes)
	}
	checkSizes(spec.ProtoReflect(), "", "", &p)
	return p.err()
}

// checkSizes checks the fields set in m; schema is m's path in the schema
// and field its path in the plan ("strategy.stages[2]").
func checkSizes(m protoreflect.Message, schema, field string, p *problems) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		s, f := join(schema, string(fd.Name())), join(field, string(fd.Name()))
		switch {
		case fd.IsMap():
			mp := v.Map()
			if max := countLimits[s]; mp.Len() > max {
				p.add(f, "%d entries: at most %d", mp.Len(), max)
			}
			limit := limitOf(s)
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if len(key) > limit {
					p.add(f, "a key of %d bytes: at most %d", len(key), limit)
					return true
				}
				if fd.MapValue().Kind() == protoreflect.StringKind {
					checkSize(join(f, key), mv.String(), limit, p)
				}
				return true
			})
		case fd.IsList():
			l := v.List()
			if max := countLimits[s]; l.Len() > max {
				p.add(f, "%d entries: at most %d", l.Len(), max)
			}
			for i := range l.Len() {
				switch fd.Kind() {
				case protoreflect.StringKind:
					checkSize(index(f, i), l.Get(i).String(), limitOf(s), p)
				case protoreflect.MessageKind:
					checkSizes(l.Get(i).Message(), s, index(f, i), p)
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			checkSize(f, v.String(), limitOf(s), p)
		case fd.Kind() == protoreflect.MessageKind:
			checkSizes(v.Message(), s, f, p)
		}
		return true
	})
}

func limitOf(schema string) int {
	if n, ok := stringLimits[schema]; ok {
		return n
	}
	return MaxWordBytes
}

func checkSize(field, s string, limit int, p *problems) {
	if len(s) > limit {
		p.add(field, "%d bytes: at most %d", len(s), limit)
	}
}
