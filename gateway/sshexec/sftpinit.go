package sshexec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Why this file exists: pkg/sftp writes at most 32 KiB per request unless
// told otherwise, and cannot ask the server what it accepts. OpenSSH's
// sftp-server accepts 255 KiB writes and says so through the
// limits@openssh.com extension; writes of 128 KiB (four times fewer
// requests) make uploads markedly faster (see BenchmarkUpload). So the SFTP
// handshake is done here, the limits are asked for when the server
// advertises them, and pkg/sftp is then handed the already-initialized
// stream: its own INIT is swallowed and the server's VERSION replayed to it.

// SFTP protocol version 3 packet types and limits used here.
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpStatus        = 101
	fxpExtended      = 200
	fxpExtendedReply = 201

	sftpVersion      = 3
	limitsExtension  = "limits@openssh.com"
	sftpMaxWriteSize = 128 << 10 // cap even if a server offers more
	maxHandshakeMsg  = 256 << 10
)

// sftpLimits is the limits@openssh.com reply; zero means "not stated".
type sftpLimits struct {
	MaxPacket, MaxRead, MaxWrite, MaxOpenHandles uint64
}

// writeSize is the data length of each SFTP write: the server's stated
// maximum, capped, or the 32 KiB every server must accept.
func (l sftpLimits) writeSize() int {
	n := l.MaxWrite
	if n == 0 && l.MaxPacket > 1024 {
		// OpenSSH's own rule: leave 1 KiB for the request header.
		n = l.MaxPacket - 1024
	}
	if n == 0 {
		return sftpDefaultPacket
	}
	return int(min(n, sftpMaxWriteSize))
}

// sftpSession is a started SFTP subsystem.
type sftpSession struct {
	client    *sftp.Client
	writeSize int
	sess      *ssh.Session
}

// close ends the client and then its SSH session.
func (s sftpSession) close() {
	s.client.Close()
	s.sess.Close()
}

// openSFTP starts the sftp subsystem on a new session of conn and returns a
// pkg/sftp client tuned to what the server accepts; writeCap, when
// positive, lowers the write size (for benchmarks).
func openSFTP(conn *ssh.Client, writeCap int) (_ sftpSession, err error) {
	sess, err := conn.NewSession()
	if err != nil {
		return sftpSession{}, err
	}
	defer func() {
		if err != nil {
			sess.Close()
		}
	}()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return sftpSession{}, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return sftpSession{}, err
	}
	if err := sess.RequestSubsystem("sftp"); err != nil {
		return sftpSession{}, err
	}

	if err := writeSFTPPacket(stdin, fxpInit, binary.BigEndian.AppendUint32(nil, sftpVersion)); err != nil {
		return sftpSession{}, fmt.Errorf("sftp init: %w", err)
	}
	rawVersion, typ, payload, err := readSFTPPacket(stdout)
	if err != nil {
		return sftpSession{}, fmt.Errorf("sftp version: %w", err)
	}
	if typ != fxpVersion {
		return sftpSession{}, fmt.Errorf("sftp version: got packet type %d", typ)
	}
	exts, err := parseVersion(payload)
	if err != nil {
		return sftpSession{}, err
	}
	var limits sftpLimits
	if _, ok := exts[limitsExtension]; ok {
		if limits, err = queryLimits(stdin, stdout); err != nil {
			return sftpSession{}, err
		}
	}

	writeSize := limits.writeSize()
	if writeCap > 0 {
		writeSize = min(writeSize, writeCap)
	}
	client, err := sftp.NewClientPipe(
		io.MultiReader(bytes.NewReader(rawVersion), stdout),
		&initSwallower{w: stdin},
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(sftpConcurrency(writeSize)),
		sftp.MaxPacketUnchecked(writeSize),
	)
	if err != nil {
		return sftpSession{}, err
	}
	return sftpSession{client: client, writeSize: writeSize, sess: sess}, nil
}

func parseVersion(p []byte) (map[string]string, error) {
	if len(p) < 4 {
		return nil, errors.New("sftp version: short packet")
	}
	if v := binary.BigEndian.Uint32(p); v != sftpVersion {
		return nil, fmt.Errorf("sftp version: server speaks version %d, want %d", v, sftpVersion)
	}
	p = p[4:]
	exts := make(map[string]string)
	for len(p) > 0 {
		name, rest, ok := sftpString(p)
		if !ok {
			return nil, errors.New("sftp version: bad extension list")
		}
		data, rest, ok := sftpString(rest)
		if !ok {
			return nil, errors.New("sftp version: bad extension list")
		}
		exts[string(name)] = string(data)
		p = rest
	}
	return exts, nil
}

// queryLimits sends the limits@openssh.com request with id 1; pkg/sftp has
// not started yet, so no other request is in flight.
func queryLimits(w io.Writer, r io.Reader) (sftpLimits, error) {
	const id = 1
	req := binary.BigEndian.AppendUint32(nil, id)
	req = binary.BigEndian.AppendUint32(req, uint32(len(limitsExtension)))
	req = append(req, limitsExtension...)
	if err := writeSFTPPacket(w, fxpExtended, req); err != nil {
		return sftpLimits{}, fmt.Errorf("sftp limits: %w", err)
	}
	_, typ, p, err := readSFTPPacket(r)
	if err != nil {
		return sftpLimits{}, fmt.Errorf("sftp limits: %w", err)
	}
	switch {
	case typ == fxpStatus:
		// Advertised but refused: use the safe default.
		return sftpLimits{}, nil
	case typ != fxpExtendedReply || len(p) < 4+4*8 || binary.BigEndian.Uint32(p) != id:
		return sftpLimits{}, fmt.Errorf("sftp limits: unexpected reply type %d", typ)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(p[4+8*i:]) }
	return sftpLimits{MaxPacket: u(0), MaxRead: u(1), MaxWrite: u(2), MaxOpenHandles: u(3)}, nil
}

func sftpString(p []byte) (s, rest []byte, ok bool) {
	if len(p) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return nil, nil, false
	}
	return p[4 : 4+n], p[4+n:], true
}

func writeSFTPPacket(w io.Writer, typ byte, payload []byte) error {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	b = append(b, typ)
	_, err := w.Write(append(b, payload...))
	return err
}

// readSFTPPacket returns the whole packet as read (length prefix included),
// its type and its payload.
func readSFTPPacket(r io.Reader) (raw []byte, typ byte, payload []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxHandshakeMsg {
		return nil, 0, nil, fmt.Errorf("bad packet length %d", n)
	}
	raw = make([]byte, 4+n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return nil, 0, nil, err
	}
	return raw, raw[4], raw[5:], nil
}

// initSwallower passes pkg/sftp's writes to the server, except its INIT
// packet: the session is already initialized, and a second INIT is a
// protocol error. It checks that what it drops really is an INIT.
type initSwallower struct {
	w    io.WriteCloser
	head []byte // bytes of the first packet seen so far
	done bool   // INIT dropped; everything passes through
}

func (s *initSwallower) Write(p []byte) (int, error) {
	if s.done {
		return s.w.Write(p)
	}
	n := len(p)
	s.head = append(s.head, p...)
	if len(s.head) < 5 {
		return n, nil
	}
	size := 4 + int(binary.BigEndian.Uint32(s.head))
	if s.head[4] != fxpInit || size > 64 {
		return 0, fmt.Errorf("sftp: expected INIT from client, got packet type %d", s.head[4])
	}
	if len(s.head) < size {
		return n, nil
	}
	rest := s.head[size:]
	s.head, s.done = nil, true
	if len(rest) > 0 {
		if _, err := s.w.Write(rest); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (s *initSwallower) Close() error { return s.w.Close() }
