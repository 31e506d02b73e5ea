package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestConsoleRefusesBadListen: --listen must be an IP address and port;
// a name is refused before anything is dialled or listened on.
func TestConsoleRefusesBadListen(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"console", "--listen", "localhost:0"}, "give an IP address"},
		{[]string{"console", "--listen", "evil.example:80"}, "give an IP address"},
		{[]string{"console", "--listen", "127.0.0.1"}, "--listen"},
		{[]string{"console", "--listen", ""}, "--listen"},
		{[]string{"console", "extra"}, "takes no arguments"},
	} {
		code, stdout, stderr := runCLI(t, nil, tc.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// TestConsoleWarnsOffLoopback: an explicit non-loopback --listen warns.
// The credential file does not exist, so the command stops before it
// listens anywhere.
func TestConsoleWarnsOffLoopback(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.pem")
	for _, listen := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0"} {
		code, _, stderr := runCLI(t, nil, "console", "--credential", missing, "--listen", listen)
		if code != 1 || !strings.Contains(stderr, "warning: --listen "+listen+" is not loopback") {
			t.Errorf("--listen %s: exit %d, stderr %q, want exit 1 with a warning", listen, code, stderr)
		}
	}
	_, _, stderr := runCLI(t, nil, "console", "--credential", missing)
	if strings.Contains(stderr, "warning") {
		t.Errorf("default --listen warns: %q", stderr)
	}
}
