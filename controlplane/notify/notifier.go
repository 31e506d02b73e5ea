package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Defaults for Config.
const (
	DefaultMaxAttempts = 6
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultQueueSize   = 100
	// DefaultTimeout bounds one POST of the default client.
	DefaultTimeout = 10 * time.Second
	// maxResponse is how much of a receiver's answer is read (and dropped)
	// so the connection can be reused.
	maxResponse = 64 << 10
)

// Config configures a Notifier.
type Config struct {
	// Client sends the POSTs; nil means a client with DefaultTimeout.
	Client *http.Client
	// MaxAttempts bounds the tries of one event (the first and the
	// retries); 0 means DefaultMaxAttempts.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the jittered exponential wait
	// between tries; 0 means DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// QueueSize bounds the events waiting per webhook; a full queue drops
	// its oldest event. 0 means DefaultQueueSize.
	QueueSize int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock that stamps events without a time; nil means time.Now.
	Now func() time.Time
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	switch {
	case c.MaxAttempts < 0, c.QueueSize < 0, c.MinBackoff < 0, c.MaxBackoff < 0:
		return errors.New("notify: negative MaxAttempts, QueueSize or backoff")
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("notify: MaxBackoff %v is below MinBackoff %v", c.MaxBackoff, c.MinBackoff)
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Stats count what happened to events, for metrics and tests.
type Stats struct {
	// Delivered events got a 2xx answer.
	Delivered int64
	// Failed events were refused (4xx), ran out of attempts, had an
	// unusable URL, or were cut off by Close.
	Failed int64
	// Dropped events never got a try: their queue was full or the
	// Notifier was closed.
	Dropped int64
}

// queue holds one webhook's events, oldest first.
type queue struct {
	url    string
	target string // scheme://host, the only part of the URL ever logged
	events []Event
}

// Notifier sends events to webhooks. It is safe for concurrent use. It
// owns one goroutine per webhook with events waiting; Close stops them.
type Notifier struct {
	cfg Config
	log *slog.Logger

	// ctx is cancelled when Close gives up waiting: in-flight POSTs and
	// backoff waits end.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // workers

	mu     sync.Mutex // guards the fields below
	queues map[string]*queue
	closed bool
	stats  Stats
}

// New returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Notifier{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "notify"),
		ctx:    ctx,
		cancel: cancel,
		queues: map[string]*queue{},
	}, nil
}

// Notify queues ev for its webhook and returns at once; it never blocks
// and never fails. Events without a webhook are ignored. Problems (a bad
// URL, a full queue, a closed Notifier, delivery failures later) are
// logged and counted in Stats.
func (n *Notifier) Notify(ev Event) {
	if ev.Webhook == "" {
		return
	}
	target, ok := targetOf(ev.Webhook)
	if !ok {
		// The URL itself is not logged: it may hold a token.
		n.log.Error("webhook URL is not an http(s) URL; notification not sent", "event", ev.Type, "rollout", ev.RolloutID)
		n.count(func(s *Stats) { s.Failed++ })
		return
	}
	if ev.Time.IsZero() {
		ev.Time = n.cfg.Now()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.stats.Dropped++
		n.log.Warn("notifier closed; notification dropped", "event", ev.Type, "rollout", ev.RolloutID, "webhook", target)
		return
	}
	q := n.queues[ev.Webhook]
	if q == nil {
		q = &queue{url: ev.Webhook, target: target}
		n.queues[ev.Webhook] = q
		n.wg.Add(1)
		go n.work(q)
	}
	if len(q.events) >= n.cfg.QueueSize {
		old := q.events[0]
		q.events = q.events[1:]
		n.stats.Dropped++
		n.log.Warn("webhook queue full; oldest notification dropped", "webhook", target,
			"dropped_event", old.Type, "dropped_rollout", old.RolloutID, "queue_size", n.cfg.QueueSize)
	}
	q.events = append(q.events, ev)
}

// RolloutState announces rollout r's change from state from to state to,
// if EventFor says it is announced, to r's webhook. It has the shape of
// the rollout engine's OnRolloutState hook; like Notify it never blocks.
// reason is not used: r's message says why.
func (n *Notifier) RolloutState(_ context.Context, r *outpostv1.Rollout, from, to outpostv1.RolloutState, _ string) {
	typ, ok := EventFor(from, to)
	if !ok {
		return
	}
	if typ == EventAborted && rolloutstate.Failed(r.GetNodeCounts()) > 0 {
		// Ended by its failure budget (or aborted after failures): that
		// is a failed rollout to the people watching the channel.
		typ = EventFailed
	}
	ev := RolloutEvent(typ, r, n.cfg.Now())
	ev.State = rolloutstate.Name(to)
	n.Notify(ev)
}

// Stats returns the counters so far.
func (n *Notifier) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

func (n *Notifier) count(f func(*Stats)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(&n.stats)
}

// Close stops taking events and waits, bounded by ctx, until every queued
// event is delivered or given up. When ctx ends first, tries in flight
// are cut off, the rest is dropped (logged), and Close returns ctx's
// error once the workers have stopped.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		n.cancel()
		return nil
	case <-ctx.Done():
	}
	n.cancel()
	<-done
	return fmt.Errorf("notify: close: notifications still pending: %w", ctx.Err())
}

// work delivers q's events in order and ends when q is empty (Notify
// starts a new worker for the next event).
func (n *Notifier) work(q *queue) {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		if len(q.events) == 0 {
			delete(n.queues, q.url)
			n.mu.Unlock()
			return
		}
		if n.ctx.Err() != nil {
			lost := len(q.events)
			q.events = nil
			n.stats.Failed += int64(lost)
			n.mu.Unlock()
			n.log.Error("notifications not delivered before shutdown", "webhook", q.target, "events", lost)
			continue
		}
		ev := q.events[0]
		q.events = q.events[1:]
		n.mu.Unlock()
		n.deliver(q, ev)
	}
}

// deliver POSTs ev until it is delivered, refused or out of attempts.
func (n *Notifier) deliver(q *queue, ev Event) {
	body, err := json.Marshal(BodyOf(ev))
	if err != nil {
		n.count(func(s *Stats) { s.Failed++ })
		n.log.Error("encoding a notification failed", "event", ev.Type, "rollout", ev.RolloutID, "err", err)
		return
	}
	log := n.log.With("webhook", q.target, "event", ev.Type, "rollout", ev.RolloutID)
	for attempt := 1; ; attempt++ {
		code, retryAfter, err := n.post(q.url, body)
		switch {
		case err == nil && code/100 == 2:
			n.count(func(s *Stats) { s.Delivered++ })
			log.Debug("notification delivered", "status", code, "attempt", attempt)
			return
		case err == nil && code/100 == 4 && code != http.StatusTooManyRequests:
			n.count(func(s *Stats) { s.Failed++ })
			log.Warn("webhook refused the notification; not retrying", "status", code)
			return
		case n.ctx.Err() != nil:
			n.count(func(s *Stats) { s.Failed++ })
			log.Error("notification not delivered before shutdown", "attempt", attempt, "err", err)
			return
		}
		reason := any(err)
		if err == nil {
			reason = fmt.Sprintf("HTTP %d", code)
		}
		if attempt >= n.cfg.MaxAttempts {
			n.count(func(s *Stats) { s.Failed++ })
			log.Error("notification not delivered; giving up", "attempts", attempt, "err", reason)
			return
		}
		wait := n.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, n.cfg.MaxBackoff)
		}
		log.Warn("notification not delivered; will retry", "attempt", attempt, "err", reason, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
		}
	}
}

// backoff is the wait after try number attempt: exponential from
// MinBackoff, capped at MaxBackoff, jittered down by up to half so
// notifiers do not retry in lockstep.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.MinBackoff
	for i := 1; i < attempt && d < n.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// post sends one try and returns the status code and the Retry-After
// delay the receiver asked for. Errors never contain the URL.
func (n *Notifier) post(u string, body []byte) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("cannot build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "outpost-notify")
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// *url.Error prints the whole URL; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}

// targetOf returns "scheme://host" of an http(s) URL, the only part that
// is logged, and false when raw is not one.
func targetOf(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	return u.Scheme + "://" + u.Host, true
}
