package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// keepaliveParams has the gateway ping the control plane after 10 idle
// seconds and give up on it 10 seconds later, so a link that died without
// a word (a firewall dropping the flow) is noticed within about 20 s. The
// control plane allows pings this often.
var keepaliveParams = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// errRenewed ends a stream so that the gateway reconnects with its
// renewed certificate.
var errRenewed = errors.New("reconnecting with the renewed certificate")

// cpConn is the gateway's connection to the control plane. A renewed
// certificate needs a new TLS handshake, so the connection is replaced:
// streams notice (changed is closed) and reconnect on the new one, while
// calls still running on the old one (an artifact fetch) finish there. The
// old connection is closed once its certificate has expired.
type cpConn struct {
	mu      sync.Mutex
	conn    *grpc.ClientConn               // guarded by mu
	client  outpostv1.GatewayServiceClient // guarded by mu
	changed chan struct{}                  // guarded by mu: closed when conn is replaced
	retired []retiredConn                  // guarded by mu
}

type retiredConn struct {
	conn  *grpc.ClientConn
	until time.Time // when its certificate expires
}

var _ fetcher = (*cpConn)(nil)

// fetcher is what the artifact cache needs of the control plane.
type fetcher interface {
	FetchArtifact(ctx context.Context, in *outpostv1.FetchArtifactRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[outpostv1.FetchArtifactResponse], error)
}

func newCPConn(conn *grpc.ClientConn) *cpConn {
	return &cpConn{conn: conn, client: outpostv1.NewGatewayServiceClient(conn), changed: make(chan struct{})}
}

// current returns the client of the current connection and a channel
// closed when it is replaced.
func (c *cpConn) current() (outpostv1.GatewayServiceClient, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client, c.changed
}

// replace makes conn current; the old connection stays open until
// oldUntil, for the calls still using it.
func (c *cpConn) replace(conn *grpc.ClientConn, oldUntil time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.retired = append(c.retired, retiredConn{conn: c.conn, until: oldUntil})
	c.conn, c.client = conn, outpostv1.NewGatewayServiceClient(conn)
	close(c.changed)
	c.changed = make(chan struct{})
}

// closeExpired closes the retired connections whose certificate expired
// by now, and returns when the next one expires (zero if none is left).
func (c *cpConn) closeExpired(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	kept := c.retired[:0]
	for _, r := range c.retired {
		if !now.Before(r.until) {
			r.conn.Close()
			continue
		}
		kept = append(kept, r)
		if next.IsZero() || r.until.Before(next) {
			next = r.until
		}
	}
	c.retired = kept
	return next
}

// Close closes every connection.
func (c *cpConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.retired {
		r.conn.Close()
	}
	c.retired = nil
	c.conn.Close()
}

// FetchArtifact fetches over the current connection.
func (c *cpConn) FetchArtifact(ctx context.Context, in *outpostv1.FetchArtifactRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[outpostv1.FetchArtifactResponse], error) {
	client, _ := c.current()
	return client.FetchArtifact(ctx, in, opts...)
}

// target returns the gRPC target of Config.ControlPlane (one replica or
// several) and the gateway's dial options: its defaults, what the target
// needs, then Config.DialOptions.
func (g *Gateway) target() (string, []grpc.DialOption) {
	target, cpOpts := controlPlaneTarget(g.cfg.ControlPlane)
	opts := append([]grpc.DialOption{
		grpc.WithKeepaliveParams(keepaliveParams),
		// A CLIENT span per call (artifact fetches), child of the task's span.
		grpc.WithStatsHandler(telemetry.GRPCClientHandler(g.cfg.TracerProvider)),
	}, cpOpts...)
	return target, append(opts, g.cfg.DialOptions...)
}

// dial connects to the control plane with cred (TLS), or with
// Config.DialOptions alone when the gateway has no credential file.
func (g *Gateway) dial(cred *pki.Credential) (*grpc.ClientConn, error) {
	target, opts := g.target()
	if cred == nil {
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			return nil, fmt.Errorf("gateway: control plane %s: %w", g.cfg.ControlPlane, err)
		}
		return conn, nil
	}
	conn, err := enroll.Dial(target, cred, opts...)
	if err != nil {
		return nil, fmt.Errorf("gateway: control plane %s: %w", g.cfg.ControlPlane, err)
	}
	return conn, nil
}

// resolveIdentity settles the gateway's name and datacenter from its
// credential file, when there is one: the certificate is what the
// control plane believes, so configured values must agree with it.
func (c *Config) resolveIdentity() error {
	cred, err := pki.LoadCredential(c.CredentialFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if c.JoinToken == "" {
			return fmt.Errorf("gateway: no credential at %s and no join token: create one with `outpost token create --datacenter DC` and start the gateway with --join-token", c.CredentialFile)
		}
		if c.Name == "" {
			host, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("gateway: Name is empty and the host name is unknown: %w", err)
			}
			c.Name = host
			if c.Datacenter != "" {
				c.Name += "-" + c.Datacenter
			}
		}
		return nil
	case err != nil:
		return fmt.Errorf("gateway: %w", err)
	}
	id := cred.Identity
	switch {
	case id.Kind != pki.KindGateway:
		return fmt.Errorf("gateway: credential %s is for %s, not a gateway", c.CredentialFile, id)
	case c.Name != "" && c.Name != id.Name:
		return fmt.Errorf("gateway: credential %s is for gateway %q, not %q", c.CredentialFile, id.Name, c.Name)
	case c.Datacenter != "" && c.Datacenter != id.Datacenter:
		return fmt.Errorf("gateway: credential %s is bound to datacenter %q, not %q", c.CredentialFile, id.Datacenter, c.Datacenter)
	}
	c.Name, c.Datacenter = id.Name, id.Datacenter
	return nil
}

// credential returns the gateway's credential: the stored one while it is
// valid, else one joined with the join token (written to the file).
// While the control plane is unreachable it retries with backoff; when ctx
// ends first it returns nil, nil. Refusals (a used, expired or revoked
// token) are errors.
func (g *Gateway) credential(ctx context.Context) (*pki.Credential, error) {
	if err := os.MkdirAll(filepath.Dir(g.cfg.CredentialFile), 0o700); err != nil {
		return nil, fmt.Errorf("gateway: credential directory: %w", err)
	}
	var lastErr string
	for failures := 0; ; failures++ {
		target, opts := g.target()
		cred, joined, err := enroll.LoadOrJoin(ctx, g.cfg.CredentialFile, target, g.cfg.Name, g.cfg.JoinToken, g.cfg.Now(), opts...)
		if err == nil {
			if g.cfg.Datacenter != "" && cred.Identity.Datacenter != g.cfg.Datacenter {
				return nil, fmt.Errorf("gateway: the join token is for datacenter %q, but this gateway was told to serve %q", cred.Identity.Datacenter, g.cfg.Datacenter)
			}
			if joined {
				g.log.Info("joined the control plane", "credential", g.cfg.CredentialFile, "bound_to", cred.Identity.String(),
					"serial", pki.SerialString(cred.Leaf()), "expires", cred.Leaf().NotAfter)
			}
			return cred, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if !retryableJoin(err) {
			return nil, err
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			g.log.Warn("cannot reach the control plane to join; retrying", "addr", g.cfg.ControlPlane, "error", err)
		}
		t := time.NewTimer(g.backoff(failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
}

// retryableJoin reports whether a failed join may succeed later: the
// control plane was unreachable. A control plane that is reachable but
// not the one the token names (its CA fingerprint differs) never will.
func retryableJoin(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return !strings.Contains(err.Error(), "CA fingerprint")
	}
	return false
}

// gatewayCertName names the gateway's certificate in
// outpost_certificate_expiry_timestamp_seconds.
const gatewayCertName = "gateway_client"

// renewAt is when to renew a certificate received at now: after two
// thirds of what is left of its life.
func renewAt(cred *pki.Credential, now time.Time) time.Time {
	return now.Add(cred.Leaf().NotAfter.Sub(now) * 2 / 3)
}

// renewRetry bounds the pause between failed renewals.
const renewRetry = time.Minute

// renew keeps the gateway's certificate fresh until ctx ends: at
// renewAt it asks the control plane for a new one, writes it to the
// credential file, and moves the connection to it.
func (g *Gateway) renew(ctx context.Context, cp *cpConn, cred *pki.Credential) {
	next := renewAt(cred, g.cfg.Now())
	failures := 0
	for {
		wake := next
		if r := cp.closeExpired(g.cfg.Now()); !r.IsZero() && r.Before(wake) {
			wake = r
		}
		t := time.NewTimer(max(0, wake.Sub(g.cfg.Now())))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if g.cfg.Now().Before(next) {
			continue // woke to close a retired connection
		}
		client, _ := cp.current()
		fresh, err := enroll.Renew(ctx, client, g.cfg.ControlPlane)
		if err == nil {
			err = fresh.Write(g.cfg.CredentialFile)
		}
		var conn *grpc.ClientConn
		if err == nil {
			conn, err = g.dial(fresh)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			left := cred.Leaf().NotAfter.Sub(g.cfg.Now())
			if left <= 0 {
				g.log.Error("gateway certificate expired and could not be renewed: create a join token for this gateway (outpost token create --datacenter DC --gateway-name NAME) and restart it with --join-token",
					"expired", cred.Leaf().NotAfter, "error", err)
			} else {
				g.log.Warn("certificate renewal failed; retrying", "error", err, "expires_in", left.Round(time.Second))
			}
			failures++
			next = g.cfg.Now().Add(min(g.backoff(failures)*10, renewRetry, max(left/4, time.Second)))
			continue
		}
		failures = 0
		cp.replace(conn, cred.Leaf().NotAfter)
		g.met.certExpiry.Set(gatewayCertName, fresh.Leaf().NotAfter)
		g.log.Info("certificate renewed", "serial", pki.SerialString(fresh.Leaf()), "expires", fresh.Leaf().NotAfter)
		cred = fresh
		next = renewAt(cred, g.cfg.Now())
	}
}
