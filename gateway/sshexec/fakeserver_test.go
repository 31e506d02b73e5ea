package sshexec

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// fakeServer is a tiny in-process SSH server for what real sshd cannot do
// here (password logins need PAM or shadow entries) or would hide (which
// credentials a client sent, which signals arrived). Every exec request
// answers "ok" and exit status 0, except two commands: "no-exit-status"
// closes the channel without one, and "sleep" waits for a signal, records
// it in signals and reports it as the exit signal. The "sftp" subsystem is
// pkg/sftp's server.
type fakeServer struct {
	addr     string
	hostKey  ssh.PublicKey
	password string

	authAttempts atomic.Int32 // any credential offered, right or wrong
	signals      chan string  // signal requests received

	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs []net.Conn // guarded by mu
}

func startFakeServer(t testing.TB, password string) *fakeServer {
	t.Helper()
	signer, _ := newEd25519Signer(t)
	host, _ := randomLoopback()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: ln.Addr().String(), hostKey: signer.PublicKey(), password: password, ln: ln,
		signals: make(chan string, 10)}
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			f.authAttempts.Add(1)
			if string(pw) == f.password {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		},
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			f.authAttempts.Add(1)
			return nil, errors.New("no keys here")
		},
	}
	cfg.AddHostKey(signer)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.cs = append(f.cs, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(c, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.cs {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer ch.Close()
			for req := range creqs {
				switch req.Type {
				case "subsystem":
					// pkg/sftp's server: an SFTP server that is not
					// OpenSSH and does not state limits.
					var msg struct{ Name string }
					if ssh.Unmarshal(req.Payload, &msg) != nil || msg.Name != "sftp" {
						req.Reply(false, nil)
						continue
					}
					req.Reply(true, nil)
					srv, err := sftp.NewServer(ch)
					if err != nil {
						return
					}
					srv.Serve()
					srv.Close()
					return
				case "exec":
					var msg struct{ Command string }
					if err := ssh.Unmarshal(req.Payload, &msg); err != nil {
						req.Reply(false, nil)
						return
					}
					req.Reply(true, nil)
					switch msg.Command {
					case "no-exit-status":
						return
					case "sleep":
						continue
					}
					ch.Write([]byte("ok\n"))
					ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
					return
				case "signal":
					var msg struct{ Signal string }
					if err := ssh.Unmarshal(req.Payload, &msg); err != nil {
						return
					}
					select {
					case f.signals <- msg.Signal:
					default:
					}
					ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
						Signal     string
						CoreDumped bool
						Error      string
						Lang       string
					}{Signal: msg.Signal}))
					return
				default:
					if req.WantReply {
						req.Reply(false, nil)
					}
				}
			}
		}()
	}
}
