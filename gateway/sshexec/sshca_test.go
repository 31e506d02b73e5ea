package sshexec

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/sshca"
)

// TestShortLivedCertificatesAgainstSSHD logs in to a real sshd that trusts
// a user CA and has no authorized_keys at all, with certificates from
// sshca: one for this login from this address is accepted, and sshd's log
// names the deployment through the key id; one used after it expired,
// from another source address, or for another login is refused; and an
// accepted one gets no pty and no port forwarding.
func TestShortLivedCertificatesAgainstSSHD(t *testing.T) {
	ca, _ := newEd25519Signer(t)
	s := startSSHD(t, sshdOptions{
		userCA:          ca.PublicKey(),
		noAuthorizedKey: true,
		// No login files of this machine's user: a slow .bashrc would
		// time the session.
		extraConfig: []string{"AuthorizedKeysFile none", "LogLevel VERBOSE", "SetEnv HOME=" + t.TempDir()},
	})
	issue := func(t *testing.T, now time.Time, sources []netip.Prefix, user, node string) *sshca.Credential {
		t.Helper()
		a, err := sshca.New(sshca.Config{CA: ca, SourceAddresses: sources, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		cred, err := a.Issue(context.Background(), sshca.Request{
			User: user, NodeAddress: s.addr,
			RolloutID: "r-cert", NodeID: node, AssignmentID: "a-" + node, Gateway: "gw-test",
			ValidBefore: now.Add(time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	dial := func(t *testing.T, cred *sshca.Credential, localAddr string) (*Client, error) {
		t.Helper()
		cfg := s.config()
		cfg.Auth = Auth{Signers: []ssh.Signer{cred.Signer}}
		cfg.LocalAddr = localAddr
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return Dial(ctx, cfg)
	}
	refused := func(t *testing.T, cred *sshca.Credential, localAddr, why string) {
		t.Helper()
		c, err := dial(t, cred, localAddr)
		if err == nil {
			c.Close()
			t.Fatalf("login with a certificate %s succeeded", why)
		}
		if !strings.Contains(err.Error(), "unable to authenticate") || cred.Used() {
			t.Errorf("login with a certificate %s: %v (key used: %v); want an authentication refusal", why, err, cred.Used())
		}
	}
	// sshdLogged waits for sshd to log want, which it does after it
	// answered the client.
	sshdLogged := func(t *testing.T, want string) {
		t.Helper()
		for range 100 {
			if strings.Contains(s.srv.Log(), want) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("sshd never logged %q; its log:\n%s", want, s.srv.Log())
	}

	t.Run("accepted", func(t *testing.T) {
		cred := issue(t, time.Now(), nil, s.user, "srv-ok")
		c, err := dial(t, cred, "")
		if err != nil {
			t.Fatalf("login with a fresh certificate: %v", err)
		}
		defer c.Close()
		if res, err := c.Run(context.Background(), "echo ok"); err != nil || string(res.Stdout) != "ok\n" {
			t.Fatalf("Run = %+v, %v", res, err)
		}
		if !cred.Used() {
			t.Error("Credential.Used is false after a certificate login")
		}
		// At INFO already: "Accepted publickey for USER from IP port P
		// ssh2: ED25519-CERT SHA256:... ID <key id> (serial N) CA ...".
		sshdLogged(t, fmt.Sprintf("Accepted publickey for %s from 127.0.0.1", s.user))
		sshdLogged(t, fmt.Sprintf("ID outpost rollout=r-cert node=srv-ok assignment=a-srv-ok gateway=gw-test (serial %d)", cred.Cert.Serial))

		// No extensions: sshd grants neither a pty nor a forwarded port.
		sess, err := c.conn.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
			t.Error("sshd granted a pty to a certificate without permit-pty")
		}
		if conn, err := c.conn.Dial("tcp", s.addr); err == nil {
			conn.Close()
			t.Error("sshd forwarded a port for a certificate without permit-port-forwarding")
		}
	})

	t.Run("expired", func(t *testing.T) {
		// Issued two hours ago for one hour.
		refused(t, issue(t, time.Now().Add(-2*time.Hour), nil, s.user, "srv-expired"), "", "that expired an hour ago")
		sshdLogged(t, "Certificate invalid: expired")
		// The key id of a refused login is logged at VERBOSE only.
		sshdLogged(t, "Failed publickey for "+s.user+" from 127.0.0.1")
		sshdLogged(t, "ID outpost rollout=r-cert node=srv-expired ")
	})

	t.Run("other source address", func(t *testing.T) {
		only2 := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
		// The kernel connects from 127.0.0.1 to a loopback address.
		refused(t, issue(t, time.Now(), only2, s.user, "srv-source"), "", "bound to 127.0.0.2, from 127.0.0.1")
		sshdLogged(t, "not from a permitted source address (127.0.0.1)")
		refused(t, issue(t, time.Now(), only2, s.user, "srv-source"), "127.0.0.3", "bound to 127.0.0.2, from 127.0.0.3")
		// The same kind of certificate from the address it names works,
		// so the address is what was refused.
		c, err := dial(t, issue(t, time.Now(), only2, s.user, "srv-source-ok"), "127.0.0.2")
		if err != nil {
			t.Fatalf("login bound to 127.0.0.2 from 127.0.0.2: %v", err)
		}
		c.Close()
		sshdLogged(t, "Accepted publickey for "+s.user+" from 127.0.0.2")
	})

	t.Run("other principal", func(t *testing.T) {
		// A certificate for another login, presented for this one.
		cred := issue(t, time.Now(), nil, "someone-else", "srv-principal")
		refused(t, cred, "", "for someone-else")
		sshdLogged(t, "Certificate invalid: name is not a listed principal")
	})

	t.Run("not yet valid", func(t *testing.T) {
		// Issued "in two hours" by a gateway whose clock runs ahead.
		refused(t, issue(t, time.Now().Add(2*time.Hour), nil, s.user, "srv-future"), "", "valid from an hour from now")
	})
}
