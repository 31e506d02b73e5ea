package plan

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzDecode feeds arbitrary bytes to Parse and ParseInventory. The seed
// corpus in testdata/fuzz/FuzzDecode holds the example plans and inventory
// of deploy/examples and the plans of testdata/good; f.Add adds small
// hostile documents. Neither may panic; what they accept must pass their
// own checks again, and what they refuse must be refused with field
// errors, at most maxProblems of them and a count of the rest.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./internal/plan/
func FuzzDecode(f *testing.F) {
	laughs := "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
	for i, prev := 1, "a"; i < 10; i++ {
		name := fmt.Sprintf("l%d", i)
		laughs += fmt.Sprintf("%s: &%s [%s]\n", name, name, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = name
	}
	f.Add([]byte(laughs))
	f.Add([]byte("app: &a " + strings.Repeat("x", 4<<10) + "\nchange_id: [" + strings.Repeat("*a,", 500) + "*a]\n"))
	f.Add([]byte("app: " + strings.Repeat("[", 200) + strings.Repeat("]", 200)))
	f.Add([]byte(base + "strategy:\n  stages:\n    - &s {name: a, batch: 1}\n    - *s\n"))
	f.Add([]byte(base + "hooks: {stop: \"" + strings.Repeat("x", MaxHookBytes+1) + "\"}\n"))
	f.Add([]byte("nodes:\n  - {id: srv-1, address: 10.0.0.1, datacenter: dc-1, labels: {a: b}}\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := Parse(data)
		if err == nil {
			if spec == nil {
				t.Fatal("Parse returned neither a plan nor an error")
			}
			if err := Validate(spec); err != nil {
				t.Errorf("Parse accepted a plan that Validate refuses: %v", err)
			}
			if n := proto.Size(spec); n > MaxPlanBytes {
				t.Errorf("Parse accepted a plan of %d bytes, over MaxPlanBytes", n)
			}
			if _, err := DeploySpecOf(spec, 1<<20); err != nil {
				t.Errorf("DeploySpecOf of an accepted plan: %v", err)
			}
		} else {
			if spec != nil {
				t.Error("Parse returned a plan with its error")
			}
			checkRefusal(t, "Parse", err)
		}

		nodes, err := ParseInventory(data)
		if err == nil {
			if err := CheckNodes(nodes); err != nil {
				t.Errorf("ParseInventory accepted nodes that CheckNodes refuses: %v", err)
			}
		} else {
			checkRefusal(t, "ParseInventory", err)
		}
	})
}

// checkRefusal checks the shape of a Parse or ParseInventory error.
func checkRefusal(t *testing.T, what string, err error) {
	t.Helper()
	fes := FieldErrors(err)
	if len(fes) == 0 || len(fes) > maxProblems+1 {
		t.Fatalf("%s error has %d field errors, want 1 to %d: %v", what, len(fes), maxProblems+1, err)
	}
	for _, fe := range fes {
		if fe.Field == "" || fe.Err == nil {
			t.Errorf("%s error %q: a field error without a field or a reason", what, fe)
		}
		// A message may quote a hook command (up to MaxHookBytes), never more.
		if n := len(fe.Error()); n > MaxHookBytes+1024 {
			t.Errorf("%s error of %d bytes: %.200s", what, n, fe)
		}
	}
}
