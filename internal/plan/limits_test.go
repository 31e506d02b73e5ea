package plan

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestLimitsCoverEveryField walks the PlanSpec schema: every string field
// has a size limit and every list and map a count limit, so a field added
// later gets a decision; and every limit names a field that exists.
func TestLimitsCoverEveryField(t *testing.T) {
	var strs, counts []string
	var walk func(md protoreflect.MessageDescriptor, path string)
	walk = func(md protoreflect.MessageDescriptor, path string) {
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			p := join(path, string(fd.Name()))
			if fd.IsMap() || fd.IsList() {
				counts = append(counts, p)
			}
			kind := fd.Kind()
			if fd.IsMap() {
				kind = fd.MapValue().Kind()
			}
			switch kind {
			case protoreflect.StringKind:
				strs = append(strs, p)
			case protoreflect.MessageKind:
				walk(fd.Message(), p)
			}
		}
	}
	walk((&outpostv1.PlanSpec{}).ProtoReflect().Descriptor(), "")
	keys := func(m map[string]int) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		return out
	}
	sorted := cmp.Transformer("sort", func(in []string) []string {
		out := append([]string(nil), in...)
		sort.Strings(out)
		return out
	})
	if diff := cmp.Diff(strs, keys(stringLimits), sorted); diff != "" {
		t.Errorf("string fields of PlanSpec vs stringLimits (-schema +limits):\n%s", diff)
	}
	if diff := cmp.Diff(counts, keys(countLimits), sorted); diff != "" {
		t.Errorf("list and map fields of PlanSpec vs countLimits (-schema +limits):\n%s", diff)
	}
}

// TestValidateRefusesOversized checks each kind of limit through
// Validate, the check the control plane runs: the error names the field,
// the size and the limit, and does not repeat the value.
func TestValidateRefusesOversized(t *testing.T) {
	valid := func() *outpostv1.PlanSpec {
		return &outpostv1.PlanSpec{
			App:      "web",
			Artifact: &outpostv1.PlanArtifact{Path: "web.war"},
			Deploy:   &outpostv1.PlanDeploy{Path: "/srv/web"},
		}
	}
	labels := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	tests := []struct {
		name   string
		change func(*outpostv1.PlanSpec)
		want   string
	}{
		{"1 MB hooks.stop", func(s *outpostv1.PlanSpec) {
			s.Hooks = &outpostv1.Hooks{Stop: strings.Repeat("x", 1<<20)}
		}, "plan: 1048612 bytes: at most 262144\nhooks.stop: 1048576 bytes: at most 16384"},
		{"hook one over", func(s *outpostv1.PlanSpec) {
			s.Hooks = &outpostv1.Hooks{Start: strings.Repeat("x", MaxHookBytes+1)}
		}, "hooks.start: 16385 bytes: at most 16384"},
		{"health command", func(s *outpostv1.PlanSpec) {
			s.Health = &outpostv1.PlanHealth{Command: strings.Repeat("x", MaxHookBytes+1)}
		}, "health.command: 16385 bytes: at most 16384"},
		{"switch back hook", func(s *outpostv1.PlanSpec) {
			s.Strategy = &outpostv1.PlanStrategy{SwitchBackHook: strings.Repeat("x", MaxHookBytes+1)}
		}, "strategy.switch_back_hook: 16385 bytes: at most 16384"},
		{"app", func(s *outpostv1.PlanSpec) { s.App = strings.Repeat("a", 64) }, "app: 64 bytes: at most 63"},
		{"change id", func(s *outpostv1.PlanSpec) { s.ChangeId = strings.Repeat("c", 201) }, "change_id: 201 bytes: at most 200"},
		{"deploy path", func(s *outpostv1.PlanSpec) { s.Deploy.Path = "/" + strings.Repeat("d", 4096) }, "deploy.path: 4097 bytes: at most 4096"},
		{"health path", func(s *outpostv1.PlanSpec) {
			s.Health = &outpostv1.PlanHealth{Http: &outpostv1.HttpHealthCheck{Port: 80, Path: "/" + strings.Repeat("h", 1024)}}
		}, "health.http.path: 1025 bytes: at most 1024"},
		{"webhook", func(s *outpostv1.PlanSpec) {
			s.Notify = &outpostv1.PlanNotify{Webhook: "https://x/" + strings.Repeat("w", 2040)}
		}, "notify.webhook: 2050 bytes: at most 2048"},
		{"word", func(s *outpostv1.PlanSpec) {
			s.Strategy = &outpostv1.PlanStrategy{Batch: strings.Repeat("9", 65)}
		}, "strategy.batch: 65 bytes: at most 64"},
		{"selector key", func(s *outpostv1.PlanSpec) {
			s.Targets = &outpostv1.PlanTargets{Selector: map[string]string{strings.Repeat("k", 1000): "v"}}
		}, "targets.selector: a key of 1000 bytes: at most 63"},
		{"selector value", func(s *outpostv1.PlanSpec) {
			s.Targets = &outpostv1.PlanTargets{Selector: map[string]string{"tier": strings.Repeat("v", 64)}}
		}, "targets.selector.tier: 64 bytes: at most 63"},
		{"selector entries", func(s *outpostv1.PlanSpec) {
			s.Targets = &outpostv1.PlanTargets{Selector: labels(65)}
		}, "targets.selector: 65 entries: at most 64"},
		{"datacenters", func(s *outpostv1.PlanSpec) {
			s.Targets = &outpostv1.PlanTargets{}
			for i := range 65 {
				s.Targets.Datacenters = append(s.Targets.Datacenters, fmt.Sprintf("dc-%d", i))
			}
		}, "targets.datacenters: 65 entries: at most 64"},
		{"datacenter name", func(s *outpostv1.PlanSpec) {
			s.Targets = &outpostv1.PlanTargets{Datacenters: []string{"dc-1", strings.Repeat("d", 300)}}
		}, "targets.datacenters[1]: 300 bytes: at most 63"},
		{"stages", func(s *outpostv1.PlanSpec) {
			s.Strategy = &outpostv1.PlanStrategy{}
			for i := range 51 {
				s.Strategy.Stages = append(s.Strategy.Stages, &outpostv1.PlanStage{Name: fmt.Sprintf("s%d", i)})
			}
		}, "strategy.stages: 51 entries: at most 50"},
		{"stage fields", func(s *outpostv1.PlanSpec) {
			s.Strategy = &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{{Name: "a"}, {
				Name: strings.Repeat("n", 64), Selector: labels(65), Bake: strings.Repeat("1", 65),
			}}}
		}, "strategy.stages[1].name: 64 bytes: at most 63\nstrategy.stages[1].selector: 65 entries: at most 64\nstrategy.stages[1].bake: 65 bytes: at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := valid()
			tt.change(spec)
			err := Validate(spec)
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tt.want)
			}
			// Field order within a message follows field numbers; compare
			// the set of lines.
			got := strings.Split(err.Error(), "\n")
			want := strings.Split(tt.want, "\n")
			sort.Strings(got)
			sort.Strings(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Validate error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateAcceptsAtTheLimits: a plan with every field exactly at its
// limit is accepted (as far as sizes go).
func TestValidateAcceptsAtTheLimits(t *testing.T) {
	hook := "echo " + strings.Repeat("x", MaxHookBytes-5)
	spec := &outpostv1.PlanSpec{
		App:      strings.Repeat("a", MaxNameBytes),
		ChangeId: strings.Repeat("c", MaxChangeIDBytes),
		Artifact: &outpostv1.PlanArtifact{Path: strings.Repeat("p", MaxPathBytes)},
		Deploy:   &outpostv1.PlanDeploy{Path: "/srv/" + strings.Repeat("d", MaxPathBytes-5)},
		Hooks:    &outpostv1.Hooks{BeforeInstall: hook, Stop: hook, AfterInstall: hook, Start: hook},
		Health:   &outpostv1.PlanHealth{Http: &outpostv1.HttpHealthCheck{Port: 80, Path: "/" + strings.Repeat("h", MaxHealthPathBytes-1)}},
		Notify:   &outpostv1.PlanNotify{Webhook: "https://x/" + strings.Repeat("w", MaxURLBytes-10)},
	}
	if err := Validate(spec); err != nil {
		t.Errorf("Validate of a plan at its limits: %v", err)
	}
}

// TestParseRefusesOversized checks the limits through Parse, the CLI's
// check: the file as a whole, and one field with its line.
func TestParseRefusesOversized(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"file one byte over", base + "change_id: x\n#" + strings.Repeat("x", MaxPlanBytes-len(base)-14) + "\n",
			"plan: 262145 bytes: at most 262144"},
		{"hooks.stop", base + "hooks:\n  stop: " + strings.Repeat("x", 20<<10) + "\n",
			"hooks.stop: 20480 bytes: at most 16384 (line 5)"},
		{"label value", base + "targets: {selector: {tier: " + strings.Repeat("v", 100) + "}}\n",
			"targets.selector.tier: 100 bytes: at most 63 (line 4)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("Parse error = %v, want %q", err, tt.want)
			}
		})
	}
	// Exactly at the limit is read (and then judged on its content).
	atLimit := base + "#" + strings.Repeat("x", MaxPlanBytes-len(base)-1)
	if len(atLimit) != MaxPlanBytes {
		t.Fatalf("test plan is %d bytes", len(atLimit))
	}
	if _, err := Parse([]byte(atLimit)); err != nil {
		t.Errorf("Parse of a %d byte plan: %v", MaxPlanBytes, err)
	}
}

// TestParseListsAtMostMaxProblems: a file of thousands of mistakes gets
// the first hundred and a count of the rest, quickly.
func TestParseListsAtMostMaxProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(base)
	n := 0
	for ; b.Len() < MaxPlanBytes-16; n++ {
		fmt.Fprintf(&b, "k%d: 1\n", n)
	}
	_, err := Parse([]byte(b.String()))
	fes := FieldErrors(err)
	if len(fes) != maxProblems+1 {
		t.Fatalf("Parse listed %d problems, want %d", len(fes), maxProblems+1)
	}
	if got, want := fes[maxProblems].Error(), fmt.Sprintf("plan: %d more problems not listed", n-maxProblems); got != want {
		t.Errorf("last problem = %q, want %q", got, want)
	}
	if fes[0].Line != 4 {
		t.Errorf("first problem %q has line %d, want 4", fes[0], fes[0].Line)
	}
}

// hostile are documents within MaxPlanBytes built to cost the decoder
// time or memory.
func hostile() map[string]string {
	out := map[string]string{}
	// One long string, then as many aliases of it as fit: JSON of over
	// 2 GB once expanded.
	var b strings.Builder
	fmt.Fprintf(&b, "app: &a %s\nchange_id: [", strings.Repeat("x", 100<<10))
	for b.Len() < MaxPlanBytes-16 {
		b.WriteString("*a,")
	}
	b.WriteString("*a]\n")
	out["string aliases"] = b.String()
	// The classic: nine levels of nine aliases each.
	laughs := "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
	for i, prev := 1, "a"; i < 10; i++ {
		name := fmt.Sprintf("l%d", i)
		laughs += fmt.Sprintf("%s: &%s [%s]\n", name, name, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = name
	}
	out["billion laughs"] = laughs
	out["deep lists"] = strings.Repeat("[", 100000)
	out["deep maps"] = "app: " + strings.Repeat("{a: ", 9000) + strings.Repeat("}", 9000)
	out["long value"] = "app: " + strings.Repeat("y", MaxPlanBytes-16)
	out["long key"] = strings.Repeat("y", MaxPlanBytes-16) + ": 1\n"
	var c strings.Builder
	c.WriteString(base + "strategy:\n  stages:\n")
	for i := 0; c.Len() < MaxPlanBytes-64; i++ {
		fmt.Fprintf(&c, "  - {name: s%d, selector: {a: b}, batch: x, bake: y}\n", i)
	}
	out["many stages"] = c.String()
	return out
}

// TestDecodeHostileIsBounded parses each hostile document as a plan and
// as an inventory: each is refused, within bounds of time and memory
// (TotalAlloc counts every allocation, not only what is live at once).
func TestDecodeHostileIsBounded(t *testing.T) {
	// Without the bounds, the string aliases alone cost 8.6 GB and two
	// minutes. The race detector makes everything several times dearer.
	maxAlloc, maxTime := uint64(400<<20), 20*time.Second // generous: the machine may be busy
	if raceDetector {
		maxAlloc, maxTime = 4*maxAlloc, 3*maxTime
	}
	for name, doc := range hostile() {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, perr := Parse([]byte(doc))
			_, ierr := ParseInventory([]byte(doc))
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			if perr == nil || ierr == nil {
				t.Errorf("Parse = %v, ParseInventory = %v; want both refused", perr, ierr)
			}
			for _, err := range []error{perr, ierr} {
				if len(err.Error()) > 64<<10 {
					t.Errorf("error of %d bytes, want a short one: %.200s", len(err.Error()), err)
				}
			}
			if alloc > maxAlloc || took > maxTime {
				t.Errorf("parsing %d bytes took %v and allocated %d MiB; want at most %v and %d MiB",
					len(doc), took, alloc>>20, maxTime, maxAlloc>>20)
			}
			t.Logf("%d bytes: %v, %d MiB allocated; %v", len(doc), took.Round(time.Millisecond), alloc>>20, clip(perr.Error(), 120))
		})
	}
}

// TestAliasesWithinBoundsStillWork: modest use of anchors is fine.
func TestAliasesWithinBoundsStillWork(t *testing.T) {
	doc := base + `strategy:
  stages:
    - &stage {name: one, batch: "10%", bake: 1m}
    - {name: two, batch: "10%", bake: 1m}
hooks:
  start: &cmd sh bin/start
  after_install: *cmd
`
	spec, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if spec.GetHooks().GetAfterInstall() != "sh bin/start" {
		t.Errorf("after_install = %q, want the alias's value", spec.GetHooks().GetAfterInstall())
	}
}
