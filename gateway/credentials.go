package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// loadAuth reads the SSH credentials once, so that a thousand node
// deployments do not read and parse the same key files a thousand times,
// and a bad file is reported when the gateway starts rather than per node.
func loadAuth(c SSHConfig) (sshexec.Auth, error) {
	auth := sshexec.Auth{Agent: c.Agent}
	var certs, keys []ssh.Signer
	for _, name := range c.KeyFiles {
		key, err := loadKeyFile(name)
		if err != nil {
			return sshexec.Auth{}, err
		}
		keys = append(keys, key)
		// OpenSSH offers "<key>-cert.pub" next to a key automatically.
		certName := name + "-cert.pub"
		data, err := os.ReadFile(certName)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return sshexec.Auth{}, fmt.Errorf("gateway: SSH certificate: %w", err)
		}
		cert, err := certSigner(data, key)
		if err != nil {
			return sshexec.Auth{}, fmt.Errorf("gateway: SSH certificate %s: %w", certName, err)
		}
		certs = append(certs, cert)
	}
	auth.Signers = append(append(certs, keys...), c.Signers...)
	if c.PasswordFile != "" {
		data, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			// The path is named, the content never.
			return sshexec.Auth{}, fmt.Errorf("gateway: SSH password file: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if pw == "" {
			return sshexec.Auth{}, fmt.Errorf("gateway: SSH password file %s is empty", c.PasswordFile)
		}
		auth.Password = pw
	}
	for _, name := range c.KnownHostsFiles {
		if _, err := os.Stat(name); err != nil {
			return sshexec.Auth{}, fmt.Errorf("gateway: SSH known_hosts: %w", err)
		}
	}
	return auth, nil
}

// loadKeyFile parses an unencrypted private key. Errors name the file, never
// its content.
func loadKeyFile(name string) (ssh.Signer, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("gateway: SSH key file: %w", err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("gateway: SSH key file %s is encrypted; load it into ssh-agent and enable the agent", name)
		}
		return nil, fmt.Errorf("gateway: SSH key file %s: %w", name, err)
	}
	return s, nil
}

// certSigner pairs a user certificate with the key it certifies.
func certSigner(data []byte, key ssh.Signer) (ssh.Signer, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, err
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.UserCert {
		return nil, errors.New("not a user certificate")
	}
	if !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
		return nil, errors.New("certifies another key")
	}
	return ssh.NewCertSigner(cert, key)
}

// dialNode connects to n with the gateway's credentials. Pinned host keys
// on the node win over the known_hosts files; with neither, sshexec refuses
// the node (no trust on first use).
func (g *Gateway) dialNode(ctx context.Context, n *outpostv1.Node) (deployer.Remote, error) {
	cfg, err := g.sshConfig(n)
	if err != nil {
		return nil, err
	}
	// The SSH client's log lines belong to the node deployment's trace.
	cfg.Logger = cfg.Logger.With(telemetry.LogArgs(ctx)...)
	var cert *deployCert
	if cfg.Auth, cert, err = g.certAuth(ctx, cfg.Auth); err != nil {
		return nil, err
	}
	c, err := sshexec.Dial(ctx, cfg)
	if err != nil {
		if ctx.Err() == nil { // a deployment cancelled is not the node's failure
			g.met.sshFailures.WithLabelValues(sshexec.FailureClass(err)).Inc()
		}
		return nil, err // a nil *Client must not become a non-nil Remote
	}
	g.noteCertLogin(cert, n)
	return c, nil
}

// nodeUser is the login on n: its own, else the gateway's default.
func (g *Gateway) nodeUser(n *outpostv1.Node) (string, error) {
	user := n.GetUser()
	if user == "" {
		user = g.cfg.SSH.User
	}
	if user == "" {
		return "", fmt.Errorf("node %s has no SSH user and the gateway has no default user", n.GetId())
	}
	return user, nil
}

// sshConfig is how to reach n.
func (g *Gateway) sshConfig(n *outpostv1.Node) (sshexec.Config, error) {
	user, err := g.nodeUser(n)
	if err != nil {
		return sshexec.Config{}, err
	}
	hk := sshexec.HostKeys{KnownHostsFiles: g.cfg.SSH.KnownHostsFiles}
	if len(n.GetHostKeys()) > 0 {
		hk = sshexec.HostKeys{}
		for i, line := range n.GetHostKeys() {
			k, err := sshexec.ParseAuthorizedKey(line)
			if err != nil {
				return sshexec.Config{}, fmt.Errorf("node %s host_keys[%d]: %w", n.GetId(), i, err)
			}
			hk.Pinned = append(hk.Pinned, k)
		}
	}
	return sshexec.Config{
		Address:     n.GetAddress(),
		User:        user,
		Auth:        g.auth,
		HostKeys:    hk,
		LocalAddr:   g.cfg.SSH.LocalAddr,
		DialLimiter: g.dials,
		Logger:      g.log.With("node_id", n.GetId()),
	}, nil
}
