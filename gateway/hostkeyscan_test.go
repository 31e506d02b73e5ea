package gateway

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestScanHostKeyReadsTheKeyOfRealSSHD(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts testsshd.Options
	}{
		{"plain host key", testsshd.Options{}},
		// Such a server offers a certificate too; a scan takes the key.
		{"host with a certificate", testsshd.Options{HostCertificate: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := testsshd.Start(t, tt.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			key, err := scanHostKey(ctx, srv.Addr)
			if err != nil {
				t.Fatalf("scanHostKey(%s): %v", srv.Addr, err)
			}
			if !bytes.Equal(key.Marshal(), srv.HostKey.Marshal()) {
				t.Errorf("scanned %s %s, want the server's %s", key.Type(), ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(srv.HostKey))
			}
		})
	}
}

func TestScanHostKeyFailures(t *testing.T) {
	closed := closedAddr(t)
	// A listener that accepts and never speaks SSH.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := mute.Accept(); err == nil {
			accepted <- c
		}
	}()
	defer func() {
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := scanHostKey(ctx, mute.Addr().String()); err == nil {
		t.Error("scan of a silent server succeeded")
	}
	if _, err := scanHostKey(context.Background(), closed); err == nil {
		t.Error("scan of a closed port succeeded")
	}
}

func TestScanRefusesNodesOfOtherDatacenters(t *testing.T) {
	g := &Gateway{cfg: Config{Datacenter: "dc-1"}, log: slogTo(&syncBuffer{})}
	res := g.scan(context.Background(), &outpostv1.ServeHostKeyScansResponse{ScanId: "s1", Node: &outpostv1.Node{Id: "n1", Address: "127.0.0.1:1", Datacenter: "dc-2"}})
	if res.GetScanId() != "s1" || res.GetAuthorizedKey() != "" || res.GetError() == "" {
		t.Errorf("scan of a node of dc-2 = %v, want an error and no key", res)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
