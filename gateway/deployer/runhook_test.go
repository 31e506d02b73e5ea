package deployer

import (
	"errors"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestCheckHookJob(t *testing.T) {
	node := &outpostv1.Node{Id: "lb-1", Address: "10.0.0.1:22"}
	tests := []struct {
		name string
		job  HookJob
		want string // "" means valid
	}{
		{"valid", HookJob{Node: node, Command: "sh lb/switch", Env: map[string]string{"OUTPOST_COLOR": "green"}}, ""},
		{"no node", HookJob{Command: "true"}, "node id and address"},
		{"no command", HookJob{Node: node, Command: "  "}, "no hook command"},
		{"denied", HookJob{Node: node, Command: "rm -rf /"}, "hook"},
		{"bad env name", HookJob{Node: node, Command: "true", Env: map[string]string{"PATH": "/tmp"}}, "must match"},
		{"env NUL", HookJob{Node: node, Command: "true", Env: map[string]string{"OUTPOST_X": "a\x00b"}}, "NUL"},
	}
	for _, tt := range tests {
		err := checkHookJob(tt.job)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", tt.name, err)
		case tt.want != "" && (err == nil || !errors.Is(err, ErrInvalidJob) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an invalid job error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestHookScriptQuotesEverything(t *testing.T) {
	got := hookScript(HookJob{Command: `echo "$OUTPOST_COLOR" >lb/active`, Env: map[string]string{
		"OUTPOST_PREVIOUS_COLOR": "blue'; rm -rf ~; '", "OUTPOST_COLOR": "green",
	}})
	want := `OUTPOST_COLOR=green
export OUTPOST_COLOR
OUTPOST_PREVIOUS_COLOR='blue'\''; rm -rf ~; '\'''
export OUTPOST_PREVIOUS_COLOR
C='echo "$OUTPOST_COLOR" >lb/active'
o=$(mktemp) || exit 70
cd && "${SHELL:-/bin/sh}" -c "$C" </dev/null >"$o" 2>&1; r=$?
[ "$r" = 0 ] || tail -c 2048 -- "$o" >&2; rm -f -- "$o"; exit "$r"
`
	if got != want {
		t.Errorf("hookScript =\n%s\nwant\n%s", got, want)
	}
}
