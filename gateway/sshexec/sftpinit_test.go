package sshexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/crypto/ssh"
)

// TestUploadNonOpenSSHServer uploads to pkg/sftp's server, which does not
// state limits: the client must fall back to 32 KiB writes.
func TestUploadNonOpenSSHServer(t *testing.T) {
	f := startFakeServer(t, "pw")
	c := dial(t, Config{
		Address:  f.addr,
		User:     "deploy",
		Auth:     Auth{Password: "pw"},
		HostKeys: HostKeys{Pinned: []ssh.PublicKey{f.hostKey}},
	})
	data := randomBytes(3<<20+7, 3)
	dst := filepath.Join(t.TempDir(), "f")
	res, err := c.Upload(context.Background(), bytes.NewReader(data), dst, 0o640)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if want := (UploadResult{Bytes: int64(len(data)), SHA256: sha256Hex(data), Sessions: 1}); res != want {
		t.Errorf("Upload = %+v, want %+v", res, want)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Errorf("uploaded file differs (%d bytes, %v)", len(got), err)
	}
	// A parallel upload in 32 KiB writes too.
	c.parallelMin = smallParallelMin
	big := randomBytes(smallParallelSize, 4)
	res, err = c.Upload(context.Background(), bytes.NewReader(big), dst, 0o640)
	if err != nil {
		t.Fatalf("parallel Upload: %v", err)
	}
	if res.Bytes != int64(len(big)) || res.SHA256 != sha256Hex(big) {
		t.Errorf("parallel Upload = %+v, want %d bytes sha256 %s", res, len(big), sha256Hex(big))
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, big) {
		t.Errorf("uploaded file differs (%d bytes, %v)", len(got), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftpWriteSize != sftpDefaultPacket {
		t.Errorf("SFTP write size = %d, want the %d default", c.sftpWriteSize, sftpDefaultPacket)
	}
}

func TestSFTPLimitsWriteSize(t *testing.T) {
	tests := []struct {
		name string
		l    sftpLimits
		want int
	}{
		{"not stated", sftpLimits{}, 32 << 10},
		{"openssh, capped", sftpLimits{MaxPacket: 256 << 10, MaxRead: 255 << 10, MaxWrite: 255 << 10}, 128 << 10},
		{"only packet size", sftpLimits{MaxPacket: 64 << 10}, 63 << 10},
		{"generous server capped", sftpLimits{MaxWrite: 16 << 20}, 128 << 10},
		{"just under the cap", sftpLimits{MaxWrite: 100 << 10}, 100 << 10},
		{"small server honored", sftpLimits{MaxWrite: 8 << 10}, 8 << 10},
	}
	for _, tt := range tests {
		if got := tt.l.writeSize(); got != tt.want {
			t.Errorf("%s: writeSize() = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func sftpPacket(typ byte, payload ...[]byte) []byte {
	p := bytes.Join(payload, nil)
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(p)))
	return append(append(b, typ), p...)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func TestQueryLimits(t *testing.T) {
	tests := []struct {
		name    string
		reply   []byte
		want    sftpLimits
		wantErr string
	}{
		{
			name:  "reply",
			reply: sftpPacket(fxpExtendedReply, u32(1), u64(262144), u64(261120), u64(261120), u64(0)),
			want:  sftpLimits{MaxPacket: 262144, MaxRead: 261120, MaxWrite: 261120},
		},
		{name: "refused", reply: sftpPacket(fxpStatus, u32(1), u32(8)), want: sftpLimits{}},
		{name: "short", reply: sftpPacket(fxpExtendedReply, u32(1), u64(1)), wantErr: "unexpected reply"},
		{name: "wrong id", reply: sftpPacket(fxpExtendedReply, u32(9), u64(1), u64(1), u64(1), u64(1)), wantErr: "unexpected reply"},
		{name: "eof", reply: nil, wantErr: "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent bytes.Buffer
			got, err := queryLimits(&sent, bytes.NewReader(tt.reply))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("queryLimits = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("queryLimits = %+v, %v; want %+v", got, err, tt.want)
			}
			wantReq := sftpPacket(fxpExtended, u32(1), u32(uint32(len(limitsExtension))), []byte(limitsExtension))
			if !bytes.Equal(sent.Bytes(), wantReq) {
				t.Errorf("request = %x, want %x", sent.Bytes(), wantReq)
			}
		})
	}
}

type bufCloser struct {
	bytes.Buffer
	closed bool
}

func (b *bufCloser) Close() error { b.closed = true; return nil }

func TestInitSwallower(t *testing.T) {
	initPkt := sftpPacket(fxpInit, u32(3))
	next := sftpPacket(3 /* OPEN */, u32(1), []byte("rest"))
	stream := append(append([]byte(nil), initPkt...), next...)
	// However pkg/sftp splits its writes, only the INIT disappears.
	for _, split := range []int{1, 3, 4, 5, len(initPkt) - 1, len(initPkt), len(initPkt) + 2, len(stream)} {
		var out bufCloser
		w := &initSwallower{w: &out}
		for _, chunk := range [][]byte{stream[:split], stream[split:]} {
			if n, err := w.Write(chunk); err != nil || n != len(chunk) {
				t.Fatalf("split %d: Write = %d, %v", split, n, err)
			}
		}
		if !bytes.Equal(out.Bytes(), next) {
			t.Errorf("split %d: passed %x, want %x", split, out.Bytes(), next)
		}
	}

	var out bufCloser
	w := &initSwallower{w: &out}
	if _, err := w.Write(next); err == nil {
		t.Error("a first packet that is not INIT was accepted")
	}
	w.Close()
	if !out.closed {
		t.Error("Close did not close the underlying writer")
	}
}

func TestParseVersion(t *testing.T) {
	str := func(s string) []byte { return append(u32(uint32(len(s))), s...) }
	tests := []struct {
		name    string
		in      []byte
		want    map[string]string
		wantErr bool
	}{
		{"no extensions", u32(3), map[string]string{}, false},
		{"extensions", bytes.Join([][]byte{u32(3), str(limitsExtension), str("1"), str("fsync@openssh.com"), str("1")}, nil),
			map[string]string{limitsExtension: "1", "fsync@openssh.com": "1"}, false},
		{"version 6", u32(6), nil, true},
		{"short", []byte{0, 0}, nil, true},
		{"truncated extension", append(u32(3), str("limits")[:5]...), nil, true},
		{"name without data", append(u32(3), str("x")...), nil, true},
	}
	for _, tt := range tests {
		got, err := parseVersion(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: parseVersion err = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: parseVersion (-want +got):\n%s", tt.name, diff)
		}
	}
}
