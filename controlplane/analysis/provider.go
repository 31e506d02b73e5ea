package analysis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	ianalysis "github.com/outposthq/outpost/internal/analysis"
)

// Bounds of a provider.
const (
	// DefaultTimeout bounds a query when the provider sets none.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout bounds a provider's timeout.
	MaxTimeout = 2 * time.Minute
	// maxResponseBytes bounds a query's answer read into memory.
	maxResponseBytes = 4 << 20
	// maxTokenBytes bounds a bearer token file.
	maxTokenBytes = 16 << 10
)

var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// TLS configures a provider's TLS; every file is PEM.
type TLS struct {
	// CAFile verifies the server; empty means the system's roots.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are a client certificate; both or neither.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// InsecureSkipVerify turns server verification off: for a lab only.
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
}

// ProviderConfig declares one provider in the control plane's
// configuration (analysis_providers).
type ProviderConfig struct {
	// Name is what plans write in measurements[].provider.
	Name string `json:"name"`
	// URL is the Prometheus base URL (http:// or https://, no query).
	URL string `json:"url"`
	// TLS settings; nil means defaults.
	TLS *TLS `json:"tls"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer";
	// empty means none. Read at each query, so a rotated token is used.
	BearerTokenFile string `json:"bearer_token_file"`
	// Timeout bounds one query ("10s"); empty means DefaultTimeout.
	Timeout string `json:"timeout"`
}

// Provider runs queries against one Prometheus.
type Provider struct {
	name    string
	base    *url.URL
	token   string // file name
	timeout time.Duration
	client  *http.Client
}

// Providers are the declared providers by name. The zero value has none.
type Providers struct {
	byName map[string]*Provider
}

// NewProviders validates the declared providers.
func NewProviders(cfgs []ProviderConfig) (*Providers, error) {
	ps := &Providers{byName: map[string]*Provider{}}
	for i, c := range cfgs {
		f := fmt.Sprintf("analysis_providers[%d]", i)
		p, err := newProvider(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if _, dup := ps.byName[c.Name]; dup {
			return nil, fmt.Errorf("%s.name: %q declared twice", f, c.Name)
		}
		ps.byName[c.Name] = p
	}
	return ps, nil
}

func newProvider(c ProviderConfig) (*Provider, error) {
	if !providerNameRE.MatchString(c.Name) {
		return nil, fmt.Errorf("name: %q: must be 1 to 63 lower-case letters, digits, '.', '_' or '-'", c.Name)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("url: %q: must be an http:// or https:// URL without credentials, query or fragment", c.URL)
	}
	p := &Provider{name: c.Name, base: u, token: c.BearerTokenFile, timeout: DefaultTimeout}
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 || d > MaxTimeout {
			return nil, fmt.Errorf("timeout: %q: must be a duration from 1ms to %s", c.Timeout, MaxTimeout)
		}
		p.timeout = d
	}
	if p.token != "" {
		if _, err := readToken(p.token); err != nil {
			return nil, fmt.Errorf("bearer_token_file: %w", err)
		}
		if u.Scheme != "https" && !loopback(u.Hostname()) {
			return nil, fmt.Errorf("bearer_token_file: set, but url %q is not https: the token would cross the network in the clear", c.URL)
		}
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: p.timeout}
	if t := c.TLS; t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.ca_file: %s: no PEM certificate", t.CAFile)
			}
			cfg.RootCAs = pool
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, errors.New("tls: set cert_file and key_file together")
		}
		if t.CertFile != "" {
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				// The error names no key material.
				return nil, fmt.Errorf("tls: client certificate %s: %w", t.CertFile, err)
			}
			cert, key := t.CertFile, t.KeyFile
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(cert, key)
				return &c, err
			}
		}
		tr.TLSClientConfig = cfg
	}
	// Redirects are refused: a provider must not send the control plane
	// (and its token) elsewhere.
	p.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return p, nil
}

func loopback(host string) bool {
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

func readToken(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("%s: more than %d bytes", file, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("%s: must hold one non-empty line", file)
	}
	return tok, nil
}

// Has reports whether a provider of that name is declared.
func (ps *Providers) Has(name string) bool {
	if ps == nil {
		return false
	}
	_, ok := ps.byName[name]
	return ok
}

// Names lists the declared providers, sorted.
func (ps *Providers) Names() []string {
	var out []string
	if ps == nil {
		return nil
	}
	for n := range ps.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ErrUnknownProvider: the plan names a provider not declared.
var ErrUnknownProvider = errors.New("no such analysis provider")

// Query runs an instant query against the named provider.
func (ps *Providers) Query(ctx context.Context, provider, query string) (ianalysis.Value, error) {
	var p *Provider
	if ps != nil {
		p = ps.byName[provider]
	}
	if p == nil {
		return ianalysis.Value{}, fmt.Errorf("%w: %q", ErrUnknownProvider, provider)
	}
	return p.Query(ctx, query)
}

// apiResponse is Prometheus's /api/v1/query answer.
type apiResponse struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// Query runs an instant query (POST /api/v1/query, Prometheus's own
// timeout set to the provider's) and returns its value: a scalar, or a
// vector's samples ordered by their labels. Any other result type is an
// error.
func (p *Provider) Query(ctx context.Context, query string) (ianalysis.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	form := url.Values{"query": {query}, "timeout": {p.timeout.String()}}
	u := p.base.JoinPath("api", "v1", "query")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return ianalysis.Value{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p.token != "" {
		tok, err := readToken(p.token)
		if err != nil {
			return ianalysis.Value{}, fmt.Errorf("provider %s: bearer token: %w", p.name, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which carries no secret.
		return ianalysis.Value{}, fmt.Errorf("provider %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return ianalysis.Value{}, fmt.Errorf("provider %s: reading the answer: %w", p.name, err)
	}
	if len(body) > maxResponseBytes {
		return ianalysis.Value{}, fmt.Errorf("provider %s: answer over %d bytes: aggregate the query (sum, avg)", p.name, maxResponseBytes)
	}
	var ar apiResponse
	if err := json.Unmarshal(body, &ar); err != nil {
		return ianalysis.Value{}, fmt.Errorf("provider %s: HTTP %d, not a Prometheus answer", p.name, resp.StatusCode)
	}
	if ar.Status != "success" {
		return ianalysis.Value{}, fmt.Errorf("provider %s: %s: %s", p.name, ar.ErrorType, clip(ar.Error, 300))
	}
	return parseResult(ar.Data.ResultType, ar.Data.Result)
}

func parseResult(typ string, raw json.RawMessage) (ianalysis.Value, error) {
	switch typ {
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(raw, &s); err != nil {
			return ianalysis.Value{}, fmt.Errorf("scalar: %w", err)
		}
		f, err := sampleValue(s[1])
		if err != nil {
			return ianalysis.Value{}, err
		}
		return ianalysis.Value{Numbers: []float64{f}}, nil
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return ianalysis.Value{}, fmt.Errorf("vector: %w", err)
		}
		sort.SliceStable(v, func(i, j int) bool { return labelKey(v[i].Metric) < labelKey(v[j].Metric) })
		out := ianalysis.Value{Numbers: make([]float64, 0, len(v))}
		for _, s := range v {
			f, err := sampleValue(s.Value[1])
			if err != nil {
				return ianalysis.Value{}, err
			}
			out.Numbers = append(out.Numbers, f)
		}
		return out, nil
	}
	return ianalysis.Value{}, fmt.Errorf("the query returns a %s: write one that returns a scalar or an instant vector", typ)
}

func sampleValue(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v)
	}
	return strconv.ParseFloat(s, 64) // parses NaN and ±Inf too
}

func labelKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + ",")
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
