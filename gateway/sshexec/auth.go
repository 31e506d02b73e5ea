package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authMethods turns a into ssh.AuthMethods. Every key goes into one
// "publickey" method because x/crypto tries each method name only once.
// release closes the agent connection; call it after the handshake.
func authMethods(ctx context.Context, a Auth) (methods []ssh.AuthMethod, release func(), err error) {
	release = func() {}
	defer func() {
		if err != nil {
			release()
		}
	}()
	keys := slices.Clone(a.Signers)
	var certs []ssh.Signer
	for _, name := range a.KeyFiles {
		key, err := loadKeyFile(name)
		if err != nil {
			return nil, release, err
		}
		keys = append(keys, key)
		// OpenSSH offers "<key>-cert.pub" next to a key automatically.
		certName := name + "-cert.pub"
		if _, err := os.Stat(certName); err != nil {
			continue
		}
		cert, err := loadCert(certName)
		if err != nil {
			return nil, release, err
		}
		s, err := pairCert(cert, []ssh.Signer{key})
		if err != nil {
			return nil, release, fmt.Errorf("sshexec: certificate %s: %w", certName, err)
		}
		certs = append(certs, s)
	}
	if a.Agent {
		signers, closeAgent, err := agentSigners(ctx)
		if err != nil {
			return nil, release, err
		}
		release = closeAgent
		keys = append(keys, signers...)
	}
	for _, name := range a.CertFiles {
		cert, err := loadCert(name)
		if err != nil {
			return nil, release, err
		}
		s, err := pairCert(cert, keys)
		if err != nil {
			return nil, release, fmt.Errorf("sshexec: certificate %s: %w", name, err)
		}
		certs = append(certs, s)
	}

	if signers := dedupSigners(append(certs, keys...)); len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if a.Password != "" {
		pw := a.Password
		methods = append(methods,
			ssh.Password(pw),
			ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				// Answer only the usual single hidden "Password:" prompt;
				// anything else (OTP, several questions) is not ours to
				// guess at.
				if len(questions) == 0 {
					return nil, nil
				}
				if len(questions) != 1 || echos[0] {
					return nil, errors.New("sshexec: keyboard-interactive prompt is not a password prompt")
				}
				return []string{pw}, nil
			}),
		)
	}
	if len(methods) == 0 {
		return nil, release, errors.New("sshexec: no usable credentials (agent has no keys?)")
	}
	return methods, release, nil
}

// loadKeyFile reads an unencrypted private key. Errors name the file but
// never echo its content.
func loadKeyFile(name string) (ssh.Signer, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("sshexec: key file: %w", err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("sshexec: key file %s is encrypted; load it into ssh-agent and set Auth.Agent", name)
		}
		return nil, fmt.Errorf("sshexec: key file %s: %w", name, err)
	}
	return s, nil
}

func loadCert(name string) (*ssh.Certificate, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("sshexec: certificate file: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("sshexec: certificate %s: %w", name, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("sshexec: certificate %s: %s is a plain key, not a certificate", name, pub.Type())
	}
	if cert.CertType != ssh.UserCert {
		return nil, fmt.Errorf("sshexec: certificate %s: not a user certificate", name)
	}
	return cert, nil
}

// pairCert returns a signer presenting cert, backed by the key it certifies.
func pairCert(cert *ssh.Certificate, keys []ssh.Signer) (ssh.Signer, error) {
	want := cert.Key.Marshal()
	for _, k := range keys {
		if bytes.Equal(k.PublicKey().Marshal(), want) {
			return ssh.NewCertSigner(cert, k)
		}
	}
	return nil, fmt.Errorf("no loaded key matches certified key %s", fingerprint(cert.Key))
}

func dedupSigners(in []ssh.Signer) []ssh.Signer {
	seen := make(map[string]bool)
	var out []ssh.Signer
	for _, s := range in {
		k := string(s.PublicKey().Marshal())
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

// agentSigners connects to $SSH_AUTH_SOCK. The agent signs during the
// handshake, so the connection stays open until release runs; until then
// ctx ending closes it so a stuck agent cannot hang Dial.
func agentSigners(ctx context.Context) (signers []ssh.Signer, release func(), err error) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, nil, errors.New("sshexec: Auth.Agent is set but SSH_AUTH_SOCK is empty")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("sshexec: ssh-agent: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	release = func() {
		stop()
		conn.Close()
	}
	signers, err = agent.NewClient(conn).Signers()
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("sshexec: ssh-agent: list keys: %w", err)
	}
	return signers, release, nil
}
