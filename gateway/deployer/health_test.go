package deployer

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestHealthGivesTheLastAnswer: when the timeout cuts the last attempt
// short, the error still gives the last answer the service gave (here
// status 503), not only "deadline exceeded". The first attempt answers
// 503, every later one hangs past the timeout.
func TestHealthGivesTheLastAnswer(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		// Every later attempt hangs until the test ends.
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	d, err := New(Config{Dial: func(context.Context, *outpostv1.Node) (Remote, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	dep := &deployment{d: d, job: Job{Node: &outpostv1.Node{Address: net.JoinHostPort(host, "22")}}}
	dep.spec.Health = Health{HTTP: &HTTPCheck{Port: p, Path: "/health", ExpectStatus: 200},
		Timeout: time.Second, Interval: 50 * time.Millisecond}
	_, err = dep.waitHealthy(context.Background(), "", "r1")
	if err == nil {
		t.Fatal("healthy, want the 503")
	}
	for _, want := range []string{"status 503, want 200", "the last attempt ran out of time", "deadline exceeded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want it to say %q", err, want)
		}
	}
}
