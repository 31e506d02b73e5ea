package simfleet

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/crypto/ssh"
)

// sshFxpWrite is the SFTP packet type of a file write.
const sshFxpWrite = 6

// maxHandleLen is far above what any SFTP server issues; a longer handle
// means the scanner lost the packet framing, and it stops interpreting.
const maxHandleLen = 256

// errUploadCut is what the SFTP server reads once an upload fault cut the
// connection.
var errUploadCut = errors.New("simfleet: connection cut by KillAfterUploadBytes fault")

// uploadWatcher sits between an SFTP channel and the SFTP server. It follows
// the client's packet framing to find the file bytes of each write packet,
// counts them, and applies the upload faults. Only the SFTP server's single
// receive loop calls Read, so the scanner state needs no lock.
type uploadWatcher struct {
	ch     ssh.Channel
	host   *Host
	conn   net.Conn
	faults Faults

	prefix    []byte // current packet's bytes up to its file data
	data      int64  // file bytes left in the current write packet
	skip      int64  // other bytes left in the current packet
	trailer   int64  // bytes after the file data of the current write
	lost      bool   // framing lost: pass bytes through uninterpreted
	written   int64  // file bytes seen in this session
	corrupted bool
	cut       bool

	// wmu serializes the SFTP server's response writes with the session's
	// end: x/crypto's channel CloseWrite is not safe against a concurrent
	// Write, and pkg/sftp may still be sending when Serve returns.
	wmu     sync.Mutex
	wclosed bool // guarded by wmu: no more writes reach the channel
}

func (u *uploadWatcher) Read(p []byte) (int, error) {
	if u.cut {
		return 0, errUploadCut
	}
	n, err := u.ch.Read(p)
	if n > 0 && !u.lost {
		if !u.scan(p[:n]) {
			u.cut = true
			_ = u.conn.Close()
			return 0, errUploadCut
		}
	}
	return n, err
}

func (u *uploadWatcher) Write(p []byte) (int, error) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	if u.wclosed {
		return 0, io.ErrClosedPipe
	}
	return u.ch.Write(p)
}

func (u *uploadWatcher) Close() error { return u.ch.Close() }

// stopWrites makes every later Write fail, after any Write under way ends,
// so the session can close its channel without racing the SFTP server.
func (u *uploadWatcher) stopWrites() {
	u.wmu.Lock()
	u.wclosed = true
	u.wmu.Unlock()
}

// scan walks b through the packet framing, counting and possibly corrupting
// file data in place. It reports false when the connection must be cut
// before b is delivered.
func (u *uploadWatcher) scan(b []byte) bool {
	for len(b) > 0 {
		switch {
		case u.data > 0:
			n := min(u.data, int64(len(b)))
			if !u.fileBytes(b[:n]) {
				return false
			}
			u.data -= n
			b = b[n:]
			if u.data == 0 {
				u.skip = u.trailer
			}
		case u.skip > 0:
			n := min(u.skip, int64(len(b)))
			u.skip -= n
			b = b[n:]
		default:
			u.prefix = append(u.prefix, b[0])
			b = b[1:]
			u.parsePrefix()
			if u.lost {
				return true
			}
		}
	}
	return true
}

// parsePrefix decides, once enough of a packet's head is in u.prefix, how
// many bytes to skip or to treat as file data.
func (u *uploadWatcher) parsePrefix() {
	p := u.prefix
	if len(p) < 5 {
		return
	}
	length := int64(binary.BigEndian.Uint32(p)) // counts the type byte and the rest
	if p[4] != sshFxpWrite {
		u.skip = length - 1
		u.prefix = p[:0]
		return
	}
	// write: uint32 id, string handle, uint64 offset, string data
	if len(p) < 13 {
		return
	}
	handleLen := int64(binary.BigEndian.Uint32(p[9:]))
	if handleLen > maxHandleLen {
		u.lost = true
		return
	}
	head := 13 + handleLen + 8 + 4
	if int64(len(p)) < head {
		return
	}
	dataLen := int64(binary.BigEndian.Uint32(p[head-4:]))
	trailer := length - (head - 4) - dataLen
	if trailer < 0 {
		u.lost = true
		return
	}
	u.host.sftpWrites.Add(1)
	u.data, u.trailer, u.skip = dataLen, trailer, 0
	if dataLen == 0 {
		u.skip = trailer
	}
	u.prefix = p[:0]
}

// fileBytes accounts for one run of file data and applies the faults to it.
func (u *uploadWatcher) fileBytes(b []byte) bool {
	if k := u.faults.KillAfterUploadBytes; k > 0 && u.written+int64(len(b)) > k {
		return false
	}
	u.written += int64(len(b))
	u.host.sftpBytes.Add(int64(len(b)))
	if u.faults.CorruptUploads && !u.corrupted {
		b[0] ^= 0xff
		u.corrupted = true
	}
	return true
}
