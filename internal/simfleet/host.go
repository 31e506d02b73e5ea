package simfleet

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// handshakeTimeout bounds an SSH handshake so a stuck client cannot pin a
// connection goroutine forever.
const handshakeTimeout = 30 * time.Second

// Host is one simulated server.
type Host struct {
	Name       string
	IP         string
	Addr       string // ip:SSHPort
	HealthAddr string // ip:HealthPort
	// Root is the host's own directory: its home, the working directory of
	// commands and the base of relative SFTP paths.
	Root    string
	HostKey ssh.PublicKey

	fleet     *Fleet
	sshConfig *ssh.ServerConfig
	sshLn     net.Listener
	healthLn  net.Listener

	mu     sync.Mutex // guards faults
	faults Faults

	connections, execs, sftpWrites, sftpBytes atomic.Int64
}

// Faults makes a host misbehave. The zero value is a healthy host.
type Faults struct {
	// CorruptUploads flips one byte of the first SFTP write of every SFTP
	// session, so the uploaded file's checksum no longer matches.
	CorruptUploads bool
	// KillAfterUploadBytes, when > 0, closes the SSH connection once an SFTP
	// session has sent more than this many file bytes; at most this many
	// reach the disk.
	KillAfterUploadBytes int64
	// RefuseConnections resets new SSH connections right after the TCP
	// accept (the listener stays bound). Existing connections are untouched.
	RefuseConnections bool
	// ExecDelay delays the start of every exec command.
	ExecDelay time.Duration
}

// Stats counts what a host has served since the fleet started.
type Stats struct {
	// Connections counts authenticated SSH connections.
	Connections int64
	// Execs counts exec requests that ran a command.
	Execs int64
	// SFTPWrites counts SFTP write packets; SFTPBytes their file bytes.
	SFTPWrites, SFTPBytes int64
}

// KnownHostsLine returns the host's known_hosts line: "[ip]:port ssh-ed25519 …".
func (h *Host) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(h.Addr)}, h.HostKey)
}

// ServiceDir is the deploy path the health endpoint watches.
func (h *Host) ServiceDir() string {
	return filepath.Join(h.Root, h.fleet.cfg.ServicePath)
}

// SetFaults replaces the host's faults. New connections, exec requests and
// SFTP sessions see the change; ones already running keep what they saw.
func (h *Host) SetFaults(f Faults) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = f
}

func (h *Host) currentFaults() Faults {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.faults
}

// Stats returns the host's counters.
func (h *Host) Stats() Stats {
	return Stats{
		Connections: h.connections.Load(),
		Execs:       h.execs.Load(),
		SFTPWrites:  h.sftpWrites.Load(),
		SFTPBytes:   h.sftpBytes.Load(),
	}
}

// serverConfig builds one host's SSH server configuration.
func (f *Fleet) serverConfig(hostKey ssh.Signer) *ssh.ServerConfig {
	keys := make(map[string]bool, len(f.cfg.ClientKeys))
	for _, k := range f.cfg.ClientKeys {
		keys[string(k.Marshal())] = true
	}
	c := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-OpenSSH_9.2 outpost-simfleet",
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if keys[string(key.Marshal())] {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("unknown public key")
		},
	}
	if f.cfg.Password != "" {
		want := []byte(f.cfg.Password)
		c.PasswordCallback = func(_ ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
			if subtle.ConstantTimeCompare(password, want) == 1 {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("wrong password")
		}
	}
	c.AddHostKey(hostKey)
	return c
}

// acceptLoop serves the host's SSH listener until it is closed.
func (h *Host) acceptLoop() {
	f := h.fleet
	for {
		c, err := h.sshLn.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off briefly
			// rather than spin; Close still ends the loop.
			f.cfg.Logger.Debug("accept", "host", h.Name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if h.currentFaults().RefuseConnections {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, like a host that refuses
			}
			_ = c.Close()
			continue
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			defer c.Close()
			if err := h.serveConn(c); err != nil {
				f.cfg.Logger.Debug("ssh connection", "host", h.Name, "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serveConn runs one SSH connection: global requests are answered like
// OpenSSH answers them, and each session channel runs concurrently.
func (h *Host) serveConn(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c, h.sshConfig)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	h.connections.Add(1)
	h.fleet.connOpened()
	defer h.fleet.open.Add(-1)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// OpenSSH answers keepalive@openssh.com and every other unknown
		// global request with a failure reply; clients treat any reply as
		// proof of life, so do the same.
		ssh.DiscardRequests(reqs)
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only session channels are supported")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &session{host: h, conn: c, user: sc.User(), ch: ch}
			s.serve(chReqs)
		}()
	}
	return sc.Wait()
}
