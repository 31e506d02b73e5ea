package cli

import (
	"strings"
	"testing"
)

func TestCacheSizeFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"20GiB", 20 << 30, ""},
		{"500MB", 500e6, ""},
		{"1073741824", 1 << 30, ""},
		{"1.5 GiB", 3 << 29, ""},
		{"1tib", 1 << 40, ""},
		{"0", 0, "needs a positive limit"},
		{"0GiB", 0, "needs a positive limit"},
		{"-1GiB", 0, "not a size"},
		{"", 0, "not a size"},
		{"lots", 0, "not a size"},
		{"20 GiB; rm -rf /", 0, "not a size"},
		{"10XB", 0, "unknown unit"},
		{"99999999TiB", 0, "too large"},
	}
	for _, tt := range tests {
		v := newCacheSizeFlag()
		err := v.Set(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Set(%q) = %v, want %d", tt.in, err, tt.want)
		case tt.wantErr == "" && int64(*v) != tt.want:
			t.Errorf("Set(%q) = %d, want %d", tt.in, int64(*v), tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Set(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
		case tt.wantErr != "" && int64(*v) != 20<<30:
			t.Errorf("Set(%q) failed but changed the value to %d", tt.in, int64(*v))
		}
	}
	for in, want := range map[int64]string{20 << 30: "20GiB", 1 << 40: "1TiB", 1536 << 20: "1536MiB", 1000: "1000", 3 << 10: "3KiB"} {
		v := cacheSizeFlag(in)
		if got := v.String(); got != want {
			t.Errorf("cacheSizeFlag(%d).String() = %q, want %q", in, got, want)
		}
	}
}

// TestGatewayCacheSizeFlag: --help teaches the flag and its default, and
// a zero limit is a usage error before anything starts.
func TestGatewayCacheSizeFlag(t *testing.T) {
	code, out, _ := runCLI(t, nil, "gateway", "--help")
	if code != 0 || !strings.Contains(out, "--artifact-cache-size SIZE") || !strings.Contains(out, "(default 20GiB)") ||
		!strings.Contains(out, "--artifact-cache-size 50GiB") {
		t.Errorf("gateway --help: exit %d, no --artifact-cache-size with its default and an example:\n%s", code, out)
	}
	code, _, errOut := runCLI(t, nil, "gateway", "--artifact-cache-size", "0", "--ssh-agent")
	if code != 2 || !strings.Contains(errOut, `"0": the artifact cache needs a positive limit`) {
		t.Errorf("gateway --artifact-cache-size 0: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(errOut, "gateway starting") {
		t.Errorf("the gateway started before refusing: %q", errOut)
	}
}
