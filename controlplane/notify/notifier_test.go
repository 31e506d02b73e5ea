package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/controlplane/notify"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newNotifier(t *testing.T, cfg notify.Config) (*notify.Notifier, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n, logs
}

// receiver is a webhook on loopback that records what it gets and answers
// with the codes in answers, then 200.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	requests int
	answers  []int
	headers  []http.Header
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	r := &receiver{answers: answers}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.requests++
		code := http.StatusOK
		if len(r.answers) > 0 {
			code, r.answers = r.answers[0], r.answers[1:]
		}
		if code == http.StatusOK {
			r.bodies = append(r.bodies, body)
			r.headers = append(r.headers, req.Header.Clone())
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got(t *testing.T) []notify.Body {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notify.Body
	for _, b := range r.bodies {
		var body notify.Body
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		out = append(out, body)
	}
	return out
}

func closeN(t *testing.T, n *notify.Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func rollout(state outpostv1.RolloutState, webhook string) *outpostv1.Rollout {
	return &outpostv1.Rollout{
		Id: "r-000042", App: "billing-api", Revision: 7, ReleaseId: "r7-1a2b3c4d", State: state,
		Plan:       &outpostv1.PlanSpec{Environment: "prod", ChangeId: "SR-2026-1142", Notify: &outpostv1.PlanNotify{Webhook: webhook}},
		NodeCounts: &outpostv1.NodeCounts{Total: 20, Succeeded: 18, RolledBack: 1, Pending: 1},
	}
}

func TestDeliversInOrder(t *testing.T) {
	rcv := newReceiver(t)
	n, _ := newNotifier(t, notify.Config{})
	types := []notify.EventType{
		notify.EventApprovalNeeded, notify.EventStarted, notify.EventPaused, notify.EventFailed,
		notify.EventRolledBack, notify.EventAborted, notify.EventSucceeded, notify.EventValidationNeeded,
	}
	for i, typ := range types {
		n.Notify(notify.RolloutEvent(typ, rollout(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, rcv.URL+"/hooks/deploys"), t0.Add(time.Duration(i)*time.Second)))
	}
	n.Notify(notify.Event{Type: notify.EventStarted}) // no webhook: ignored
	closeN(t, n)

	got := rcv.got(t)
	if len(got) != len(types) {
		t.Fatalf("receiver got %d events, want %d", len(got), len(types))
	}
	for i, typ := range types {
		if got[i].Event != typ {
			t.Errorf("event %d = %q, want %q (order of Notify)", i, got[i].Event, typ)
		}
	}
	want := notify.Body{
		Event: notify.EventFailed, RolloutID: "r-000042", App: "billing-api", Environment: "prod", Revision: 7,
		Release: "r7-1a2b3c4d", State: "RUNNING", ChangeID: "SR-2026-1142", Time: t0.Add(3 * time.Second),
		Counts: notify.Counts{Total: 20, Succeeded: 18, RolledBack: 1, Pending: 1},
		Text:   "Outpost: billing-api revision 7 to prod failed (rollout r-000042, release r7-1a2b3c4d, change SR-2026-1142; 20 nodes: 18 succeeded, 1 pending, 1 rolled back)",
	}
	if diff := cmp.Diff(want, got[3]); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if ct := rcv.headers[0].Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	// Every field is present, with the documented names.
	var raw map[string]any
	if err := json.Unmarshal(rcv.bodies[0], &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"event", "rollout_id", "app", "environment", "revision", "release", "state", "message", "change_id", "time", "counts", "text"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("body lacks %q: %s", k, rcv.bodies[0])
		}
	}
	if s := n.Stats(); s != (notify.Stats{Delivered: int64(len(types))}) {
		t.Errorf("Stats = %+v", s)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name     string
		answers  []int
		requests int
		stats    notify.Stats
		log      string
	}{
		{"500TwiceThen200", []int{500, 500}, 3, notify.Stats{Delivered: 1}, "will retry"},
		{"429IsRetried", []int{429}, 2, notify.Stats{Delivered: 1}, "HTTP 429"},
		{"400IsNotRetried", []int{400}, 1, notify.Stats{Failed: 1}, "not retrying"},
		{"GivesUp", []int{503, 503, 503, 503}, 3, notify.Stats{Failed: 1}, "giving up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := newReceiver(t, tt.answers...)
			n, logs := newNotifier(t, notify.Config{MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
			n.Notify(notify.RolloutEvent(notify.EventSucceeded, rollout(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, rcv.URL), t0))
			closeN(t, n)
			rcv.mu.Lock()
			requests, delivered := rcv.requests, len(rcv.bodies)
			rcv.mu.Unlock()
			if requests != tt.requests || delivered != int(tt.stats.Delivered) {
				t.Errorf("receiver got %d requests, %d delivered; want %d, %d", requests, delivered, tt.requests, tt.stats.Delivered)
			}
			if s := n.Stats(); s != tt.stats {
				t.Errorf("Stats = %+v, want %+v", s, tt.stats)
			}
			if !strings.Contains(logs.String(), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, logs)
			}
		})
	}
}

// deadURL returns a loopback URL nobody listens on, carrying a secret
// token the way Slack webhook URLs do.
func deadURL(t *testing.T) (string, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const token = "T0KEN-b8f3e1c2d4"
	return "http://" + addr + "/services/" + token + "?sig=" + token, token
}

func TestDeadReceiver(t *testing.T) {
	dead, token := deadURL(t)
	live := newReceiver(t)
	n, logs := newNotifier(t, notify.Config{QueueSize: 5, MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second})

	// Notify never blocks, however many events pile up for a dead
	// receiver: the queue keeps the newest five.
	for range 100 {
		n.Notify(notify.RolloutEvent(notify.EventStarted, rollout(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, dead), t0))
	}
	// A live receiver is not held up by the dead one.
	n.Notify(notify.RolloutEvent(notify.EventSucceeded, rollout(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, live.URL), t0))
	for i := 0; n.Stats().Delivered == 0; i++ {
		if i == 500 {
			t.Fatal("live receiver got nothing in 5s while a dead one retried")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := n.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want DeadlineExceeded (the dead receiver's events are still pending)", err)
	}
	s := n.Stats()
	if s.Delivered != 1 || s.Dropped < 94 || s.Delivered+s.Failed+s.Dropped != 101 {
		t.Errorf("Stats = %+v; want 1 delivered, the rest dropped or failed", s)
	}
	n.Notify(notify.RolloutEvent(notify.EventStarted, rollout(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, live.URL), t0))
	if got := n.Stats().Dropped; got != s.Dropped+1 {
		t.Errorf("Notify after Close: Dropped = %d, want %d", got, s.Dropped+1)
	}

	out := logs.String()
	for _, want := range []string{"will retry", "connection refused", "oldest notification dropped", "webhook=" + strings.SplitN(dead, "/services", 2)[0]} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(out, token) || strings.Contains(out, "/services") {
		t.Errorf("log contains the webhook URL's path or token:\n%s", out)
	}
}

func TestBadURL(t *testing.T) {
	n, logs := newNotifier(t, notify.Config{})
	for _, u := range []string{"ftp://host/x", "not a url", "https:///no-host", "http://[::1"} {
		n.Notify(notify.Event{Type: notify.EventStarted, Webhook: u + "SECRETPART"})
	}
	closeN(t, n)
	if s := n.Stats(); s.Failed != 4 {
		t.Errorf("Stats = %+v, want 4 failed", s)
	}
	if strings.Contains(logs.String(), "SECRETPART") {
		t.Errorf("log contains the URL:\n%s", logs)
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []notify.Config{
		{MaxAttempts: -1},
		{QueueSize: -1},
		{MinBackoff: time.Second, MaxBackoff: time.Millisecond},
	} {
		if _, err := notify.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestRolloutState feeds the engine's state changes of one rollout and
// checks which events the receiver gets, in order.
func TestRolloutState(t *testing.T) {
	rcv := newReceiver(t)
	n, _ := newNotifier(t, notify.Config{})
	const (
		none     = outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED
		pending  = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
		approved = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED
		running  = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
		paused   = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
		val      = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		rejected = outpostv1.RolloutState_ROLLOUT_STATE_REJECTED
	)
	ctx := context.Background()
	for _, c := range [][2]outpostv1.RolloutState{
		{none, pending}, {pending, approved}, {approved, running}, {running, paused}, {paused, running}, {running, val}, {val, rejected},
	} {
		n.RolloutState(ctx, rollout(c[1], rcv.URL), c[0], c[1], "")
	}
	closeN(t, n)
	var got []string
	for _, b := range rcv.got(t) {
		got = append(got, string(b.Event)+" "+b.State)
	}
	want := []string{"approval_needed PENDING_APPROVAL", "started RUNNING", "paused PAUSED", "validation_needed PENDING_VALIDATION", "rolled_back REJECTED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
