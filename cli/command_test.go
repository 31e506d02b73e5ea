package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// cliTimeout bounds each command line a test runs, so a verb that hangs
// fails its test with its own error instead of timing out the package.
const cliTimeout = 2 * time.Minute

// runCLI runs one command line in-process and returns its exit code and
// output streams.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	code = Run(ctx, args, &Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
	})
	return code, out.String(), errOut.String()
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		wantOut    string
		wantStderr string
	}{
		{[]string{}, 0, "Usage: outpost COMMAND", ""},
		{[]string{"--help"}, 0, "Commands:", ""},
		{[]string{"version"}, 0, "outpost dev", ""},
		{[]string{"version", "--help"}, 0, "Usage: outpost version", ""},
		{[]string{"version", "extra"}, 2, "", "version takes no arguments"},
		{[]string{"nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"version", "--nosuch"}, 2, "", "unknown flag: --nosuch"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, nil, tt.args...)
		if code != tt.code {
			t.Errorf("outpost %q: exit %d, want %d (stderr %q)", tt.args, code, tt.code, errOut)
		}
		if !strings.Contains(out, tt.wantOut) {
			t.Errorf("outpost %q: stdout %q, want it to contain %q", tt.args, out, tt.wantOut)
		}
		if !strings.Contains(errOut, tt.wantStderr) {
			t.Errorf("outpost %q: stderr %q, want it to contain %q", tt.args, errOut, tt.wantStderr)
		}
	}
}

func TestParseInterleaved(t *testing.T) {
	code, _, errOut := runCLI(t, nil, "version", "--", "x")
	if code != 2 || !strings.Contains(errOut, "no arguments") {
		t.Errorf("args after -- are positional: exit %d, stderr %q", code, errOut)
	}
}
