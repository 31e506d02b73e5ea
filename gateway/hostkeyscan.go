package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Host key scans (ControlPlaneService.ScanNodeHostKey): the control plane
// asks, over the ServeHostKeyScans stream, for the key a node presents;
// the gateway dials the node, takes the key from the SSH handshake and
// hangs up before authenticating. It offers no credential, so a scan
// cannot log in anywhere, and it trusts nothing: a person compares the
// fingerprint and pins the key (TrustNodeHostKey).

const (
	// scanTimeout bounds one scan: TCP connect and key exchange.
	scanTimeout = 10 * time.Second
	// maxScans bounds the scans run at once.
	maxScans = 4
	// scanUser is the login named in the handshake; it never gets to
	// authenticate.
	scanUser = "outpost-host-key-scan"
)

// scanHostKeyAlgorithms asks for plain host keys, never host
// certificates: a pinned key is a key; host CAs belong in known_hosts.
var scanHostKeyAlgorithms = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// errKeyRead aborts the handshake once the host key is in hand.
var errKeyRead = errors.New("host key read")

// scanHostKey connects to addr (host:port, port 22 if missing) and
// returns the host key the server presents, without authenticating.
func scanHostKey(ctx context.Context, addr string) (ssh.PublicKey, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	ctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var key ssh.PublicKey
	_, _, _, err = ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: scanUser,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return errKeyRead
		},
		HostKeyAlgorithms: scanHostKeyAlgorithms,
	})
	if key != nil {
		return key, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("no SSH handshake within %v", scanTimeout)
	}
	if err == nil {
		err = errors.New("the handshake ended without a host key")
	}
	return nil, err
}

// scanLink holds the ServeHostKeyScans stream until ctx ends,
// reconnecting with backoff like link.
func (g *Gateway) scanLink(ctx context.Context, cp *cpConn) {
	var lastErr string
	failures := 0
	for {
		client, changed := cp.current()
		served, err := g.scanSession(ctx, client, changed)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRenewed) {
			failures = 0
			continue
		}
		if served {
			failures, lastErr = 0, ""
		}
		switch msg := err.Error(); {
		case status.Code(err) == codes.Unimplemented:
			// An older control plane: scans are not possible, nothing else
			// is affected.
			if msg != lastErr {
				g.log.Info("the control plane does not ask for host key scans", "error", err)
			}
			lastErr = msg
		case msg != lastErr:
			lastErr = msg
			g.log.Debug("host key scan stream ended; reconnecting", "error", err)
		}
		d := g.backoff(failures)
		failures++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// scanSession serves one ServeHostKeyScans stream until it breaks, ctx
// ends or the connection is replaced. served reports whether the control
// plane asked for anything (the stream worked).
func (g *Gateway) scanSession(ctx context.Context, client outpostv1.GatewayServiceClient, changed <-chan struct{}) (served bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ServeHostKeyScans(ctx)
	if err != nil {
		return false, fmt.Errorf("host key scans: %w", err)
	}
	var (
		sendMu sync.Mutex
		scans  sync.WaitGroup
	)
	defer scans.Wait()
	slots := make(chan struct{}, maxScans)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			served = true
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
			scans.Add(1)
			go func() {
				defer scans.Done()
				defer func() { <-slots }()
				res := g.scan(ctx, req)
				sendMu.Lock()
				defer sendMu.Unlock()
				if err := stream.Send(res); err != nil {
					g.log.Debug("host key scan result not sent", "scan_id", req.GetScanId(), "error", err)
				}
			}()
		}
	}()
	select {
	case err = <-recvErr:
	case <-changed:
		cancel()
		<-recvErr
		err = errRenewed
	case <-ctx.Done():
		<-recvErr
		err = ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		err = errStreamClosed
	}
	return served, err
}

// scan runs one host key scan and describes its outcome.
func (g *Gateway) scan(ctx context.Context, req *outpostv1.ServeHostKeyScansResponse) *outpostv1.ServeHostKeyScansRequest {
	if req.GetObserve() != nil {
		return g.observe(ctx, req)
	}
	n := req.GetNode()
	res := &outpostv1.ServeHostKeyScansRequest{ScanId: req.GetScanId()}
	switch {
	case n.GetAddress() == "":
		res.Error = fmt.Sprintf("node %s has no address", n.GetId())
		return res
	case n.GetDatacenter() != g.cfg.Datacenter:
		res.Error = fmt.Sprintf("node %s is in datacenter %q; this gateway serves %q", n.GetId(), n.GetDatacenter(), g.cfg.Datacenter)
		return res
	}
	key, err := scanHostKey(ctx, n.GetAddress())
	if err != nil {
		g.log.Info("host key scan failed", "node_id", n.GetId(), "address", n.GetAddress(), "error", err)
		res.Error = err.Error()
		return res
	}
	res.AuthorizedKey = string(ssh.MarshalAuthorizedKey(key))
	g.log.Info("host key scanned", "node_id", n.GetId(), "address", n.GetAddress(), "key_type", key.Type(), "fingerprint", ssh.FingerprintSHA256(key))
	return res
}
