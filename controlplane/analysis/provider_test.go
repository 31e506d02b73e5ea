package analysis

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewProvidersRefuses(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoLines := filepath.Join(dir, "two")
	if err := os.WriteFile(twoLines, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfgs []ProviderConfig
		want string
	}{
		{"bad name", []ProviderConfig{{Name: "Prom!", URL: "http://127.0.0.1:9090"}}, "name:"},
		{"duplicate", []ProviderConfig{{Name: "p", URL: "http://127.0.0.1:1"}, {Name: "p", URL: "http://127.0.0.1:2"}}, "declared twice"},
		{"not http", []ProviderConfig{{Name: "p", URL: "file:///etc/passwd"}}, "must be an http"},
		{"credentials in url", []ProviderConfig{{Name: "p", URL: "https://u:pw@prom:9090"}}, "without credentials"},
		{"query in url", []ProviderConfig{{Name: "p", URL: "https://prom:9090/?x=1"}}, "without credentials, query"},
		{"timeout", []ProviderConfig{{Name: "p", URL: "https://prom", Timeout: "1h"}}, "timeout"},
		{"missing token file", []ProviderConfig{{Name: "p", URL: "https://prom", BearerTokenFile: filepath.Join(dir, "none")}}, "bearer_token_file"},
		{"token over plain http", []ProviderConfig{{Name: "p", URL: "http://prom.example:9090", BearerTokenFile: token}}, "in the clear"},
		{"token of two lines", []ProviderConfig{{Name: "p", URL: "https://prom", BearerTokenFile: twoLines}}, "one non-empty line"},
		{"half a client cert", []ProviderConfig{{Name: "p", URL: "https://prom", TLS: &TLS{CertFile: token}}}, "together"},
		{"bad CA", []ProviderConfig{{Name: "p", URL: "https://prom", TLS: &TLS{CAFile: token}}}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewProviders(tc.cfgs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewProviders = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
	ps, err := NewProviders([]ProviderConfig{{Name: "p", URL: "http://127.0.0.1:9090", BearerTokenFile: token}})
	if err != nil {
		t.Fatalf("a token to a loopback Prometheus: %v", err)
	}
	if !ps.Has("p") || ps.Has("q") {
		t.Errorf("Has: p %v, q %v", ps.Has("p"), ps.Has("q"))
	}
}

func TestQueryUnknownProvider(t *testing.T) {
	var ps *Providers
	if _, err := ps.Query(context.Background(), "prom", "up"); !errors.Is(err, ErrUnknownProvider) {
		t.Errorf("Query on no providers = %v, want ErrUnknownProvider", err)
	}
}

func TestParseResult(t *testing.T) {
	v, err := parseResult("vector", []byte(`[{"metric":{"b":"2"},"value":[1,"0.5"]},{"metric":{"a":"1"},"value":[1,"NaN"]}]`))
	if err != nil || len(v.Numbers) != 2 || v.Numbers[1] != 0.5 {
		t.Errorf("vector = %v, %v; want [NaN 0.5] ordered by labels", v, err)
	}
	if v, err := parseResult("scalar", []byte(`[1,"3"]`)); err != nil || v.String() != "3" {
		t.Errorf("scalar = %v, %v", v, err)
	}
	if _, err := parseResult("matrix", []byte(`[]`)); err == nil || !strings.Contains(err.Error(), "instant vector") {
		t.Errorf("matrix: %v", err)
	}
}
