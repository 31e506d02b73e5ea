// Package testprometheus runs Debian's Prometheus server (/usr/bin/prometheus,
// package prometheus, installed by scripts/deps.sh) for tests: on a loopback
// port, with a temporary configuration and data directory, scraping the
// given targets, and stopped when the test ends. It also finds promtool.
//
// Tests use it to check Outpost's metrics, alerting rules and dashboard
// against the real thing instead of a parser of their own.
package testprometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Paths of Debian's binaries.
const (
	PrometheusPath = "/usr/bin/prometheus"
	PromtoolPath   = "/usr/bin/promtool"
)

// Promtool returns promtool's path, or fails tb when it is missing.
func Promtool(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(PromtoolPath); err != nil {
		tb.Fatalf("testprometheus: %v: install Debian's prometheus package (scripts/deps.sh)", err)
	}
	return PromtoolPath
}

// Options configure Start.
type Options struct {
	// Targets are the scrape targets (host:port, path /metrics) by job.
	Targets map[string][]string
	// ScrapeInterval; 0 means 1s.
	ScrapeInterval time.Duration
	// RuleFiles are loaded as rule_files.
	RuleFiles []string
}

// Server is a running Prometheus.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:PORT).
	URL string
}

// client keeps no idle connections, so none outlives the test (goleak).
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// Scrape GETs url (a /metrics endpoint) and returns the body.
func Scrape(ctx context.Context, url string) ([]byte, error) {
	body, status, err := get(ctx, url)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d: %s", url, status, body)
	}
	return body, nil
}

// get GETs url and returns the body (up to 64 MiB) and the status code.
func get(ctx context.Context, url string) (body []byte, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return body, resp.StatusCode, err
}

// startTimeout bounds the wait for Prometheus to be ready.
const startTimeout = 60 * time.Second

// Start runs Prometheus until the test ends, or fails tb.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if _, err := os.Stat(PrometheusPath); err != nil {
		tb.Fatalf("testprometheus: %v: install Debian's prometheus package (scripts/deps.sh)", err)
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = time.Second
	}
	dir := tb.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, config(opts), 0o600); err != nil {
		tb.Fatal(err)
	}
	addr, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, PrometheusPath,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("testprometheus: start: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		cancel()
		<-exited
		if tb.Failed() {
			tb.Logf("prometheus log:\n%s", logs.String())
		}
	})
	s := &Server{URL: "http://" + addr}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-exited:
			tb.Fatalf("testprometheus: prometheus exited:\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testprometheus: not ready within %v (last error %v):\n%s", startTimeout, err, logs.String())
		}
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// config is the prometheus.yml for opts.
func config(opts Options) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", opts.ScrapeInterval, opts.ScrapeInterval)
	if len(opts.RuleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range opts.RuleFiles {
			fmt.Fprintf(&b, "  - %s\n", strconv.Quote(f))
		}
	}
	b.WriteString("scrape_configs:\n")
	jobs := make([]string, 0, len(opts.Targets))
	for job := range opts.Targets {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		fmt.Fprintf(&b, "  - job_name: %s\n    static_configs:\n      - targets:\n", strconv.Quote(job))
		for _, t := range opts.Targets[job] {
			fmt.Fprintf(&b, "          - %s\n", strconv.Quote(t))
		}
	}
	return []byte(b.String())
}

// Sample is one element of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query evaluates expr now through the HTTP query API. A scalar result is
// one Sample without labels. An expression Prometheus cannot parse or
// evaluate is an error that says why.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	body, _, err := get(ctx, s.URL+"/api/v1/query?"+url.Values{"query": {expr}}.Encode())
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	switch r.Data.ResultType {
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(v))
		for _, e := range v {
			f, err := value(e.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", expr, err)
			}
			out = append(out, Sample{Metric: e.Metric, Value: f})
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := value(v)
		if err != nil {
			return nil, err
		}
		return []Sample{{Value: f}}, nil
	}
	return nil, fmt.Errorf("query %q: result type %q", expr, r.Data.ResultType)
}

func value(v [2]any) (float64, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, errors.New("sample value is not a string")
	}
	return strconv.ParseFloat(s, 64)
}

// WaitFor queries expr every 200ms until ok accepts the result, or fails
// tb after timeout, showing the last result.
func (s *Server) WaitFor(tb testing.TB, what, expr string, timeout time.Duration, ok func([]Sample) bool) []Sample {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last []Sample
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last, lastErr = s.Query(ctx, expr)
		cancel()
		if lastErr == nil && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testprometheus: %s: %s not as wanted within %v: %v (error %v)", what, expr, timeout, last, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Names returns the names of every series Prometheus holds.
func (s *Server) Names(ctx context.Context) ([]string, error) {
	return s.strings(ctx, "/api/v1/label/__name__/values")
}

// Labels returns the names of every label Prometheus holds.
func (s *Server) Labels(ctx context.Context) ([]string, error) {
	return s.strings(ctx, "/api/v1/labels")
}

func (s *Server) strings(ctx context.Context, path string) ([]string, error) {
	body, _, err := get(ctx, s.URL+path)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string   `json:"status"`
		Error  string   `json:"error"`
		Data   []string `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", path, r.Error)
	}
	return slices.Sorted(slices.Values(r.Data)), nil
}
