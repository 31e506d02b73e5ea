package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// JaegerVersion is the Jaeger release tools/jaeger/go.mod pins; its
// cmd/jaeger is Jaeger v2 (an OpenTelemetry Collector distribution).
const JaegerVersion = "v1.75.0"

// JaegerBinary is where scripts/jaeger.sh builds Jaeger: beside Go's
// build cache, so a machine builds it once and later runs reuse it.
func JaegerBinary() (string, error) {
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	cache := strings.TrimSpace(string(out))
	if cache == "" || cache == "off" {
		return "", fmt.Errorf("go env GOCACHE is %q: no place for the tool", cache)
	}
	return filepath.Join(filepath.Dir(cache), "outpost-tools", "jaeger-"+JaegerVersion), nil
}

// EnsureJaeger returns the Jaeger binary, building it with
// scripts/jaeger.sh when it is missing (the first build takes long: `make
// test` builds it before the tests). When it cannot be had, the test
// fails under CI (CI=true) and is skipped, loudly, elsewhere.
func EnsureJaeger(t *testing.T) string {
	t.Helper()
	bin, err := JaegerBinary()
	if err == nil {
		if _, err = os.Stat(bin); err == nil {
			return bin
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "jaeger.sh")
		// Bounded by the test binary's deadline, less time for the test.
		ctx := context.Background()
		if d, ok := t.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, d.Add(-3*time.Minute))
			defer cancel()
		}
		t.Logf("building Jaeger %s with %s (the first build takes many minutes; `make jaeger` does it ahead)", JaegerVersion, script)
		var out []byte
		out, err = exec.CommandContext(ctx, "bash", script).CombinedOutput()
		if err == nil {
			if _, err = os.Stat(bin); err == nil {
				return bin
			}
		}
		err = fmt.Errorf("%w\n%s", err, out)
	}
	msg := fmt.Sprintf("\n*** NO TRACE BACKEND: Jaeger %s could not be built (%v).\n*** Run scripts/jaeger.sh to see why. This test checks traces against a real backend. ***", JaegerVersion, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Jaeger is a running Jaeger v2 with in-memory storage, an OTLP/gRPC
// receiver and its query API, all on loopback.
type Jaeger struct {
	// OTLP is the OTLP/gRPC receiver's host:port.
	OTLP string
	// Query is the base URL of the query service (UI and /api).
	Query string
}

// StartJaeger starts bin on free loopback ports and stops it when the
// test ends.
func StartJaeger(t *testing.T, bin string) *Jaeger {
	t.Helper()
	ports := freePorts(t, 3)
	j := &Jaeger{
		OTLP:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		Query: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	}
	// Only what the test needs: no self-telemetry port (8888 by default),
	// no health check, sampling or zipkin listeners.
	config := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    enable_tracing: false
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`, ports[1], ports[2], j.OTLP)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "jaeger.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	// Ready when the query API answers and the receiver accepts.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("jaeger exited at start:\n%s", log)
		default:
		}
		resp, err := http.Get(j.Query + "/api/services")
		if err == nil {
			resp.Body.Close()
			if c, err := net.DialTimeout("tcp", j.OTLP, time.Second); err == nil {
				c.Close()
				if resp.StatusCode == http.StatusOK {
					return j
				}
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("jaeger not ready after 60s:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePorts returns n distinct free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// JaegerTrace is a trace as Jaeger's query API (/api/traces) returns it.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace.
type JaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"` // CHILD_OF (the parent) or FOLLOWS_FROM (a link)
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	ProcessID string      `json:"processID"`
	Tags      []JaegerTag `json:"tags"`
}

// JaegerProcess is the resource of the spans that name it.
type JaegerProcess struct {
	ServiceName string      `json:"serviceName"`
	Tags        []JaegerTag `json:"tags"`
}

// JaegerTag is a span attribute or resource attribute.
type JaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Tag returns the value of the tag key, as text ("" when absent).
func (s JaegerSpan) Tag(key string) string { return tagOf(s.Tags, key) }

// Tag returns the value of the resource attribute key, as text.
func (p JaegerProcess) Tag(key string) string { return tagOf(p.Tags, key) }

func tagOf(tags []JaegerTag, key string) string {
	for _, t := range tags {
		if t.Key == key {
			switch v := t.Value.(type) {
			case string:
				return v
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			default:
				return fmt.Sprint(v)
			}
		}
	}
	return ""
}

// Services lists the service names Jaeger has spans of.
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	var body struct {
		Data []string `json:"data"`
	}
	err := j.get(ctx, "/api/services", &body)
	return body.Data, err
}

// Traces returns the traces with spans of service (and operation, when
// set) from the last hour, at most limit.
func (j *Jaeger) Traces(ctx context.Context, service, operation string, limit int) ([]JaegerTrace, error) {
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}, "lookback": {"1h"}}
	if operation != "" {
		q.Set("operation", operation)
	}
	var body struct {
		Data []JaegerTrace `json:"data"`
	}
	err := j.get(ctx, "/api/traces?"+q.Encode(), &body)
	return body.Data, err
}

// Trace returns one trace by id.
func (j *Jaeger) Trace(ctx context.Context, id string) (JaegerTrace, error) {
	var body struct {
		Data []JaegerTrace `json:"data"`
	}
	if err := j.get(ctx, "/api/traces/"+url.PathEscape(id), &body); err != nil {
		return JaegerTrace{}, err
	}
	if len(body.Data) != 1 {
		return JaegerTrace{}, fmt.Errorf("trace %s: %d traces in the answer", id, len(body.Data))
	}
	return body.Data[0], nil
}

func (j *Jaeger) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
