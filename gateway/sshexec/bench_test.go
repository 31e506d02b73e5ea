package sshexec

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const benchFileSize = 256 << 20

// benchFile writes size pseudo-random (incompressible) bytes to a file.
func benchFile(b *testing.B, size int) string {
	b.Helper()
	name := filepath.Join(b.TempDir(), "artifact.bin")
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	if _, err := io.CopyN(f, r, int64(size)); err != nil {
		b.Fatal(err)
	}
	return name
}

// BenchmarkUpload uploads a 256 MiB file to a real sshd on loopback.
// Compare with BenchmarkSCP, which sends the same file with OpenSSH scp.
func BenchmarkUpload(b *testing.B) {
	benchmarkUpload(b, 0)
}

// BenchmarkUploadWriteSize shows what the write size learned from
// limits@openssh.com buys over the 32 KiB every server accepts.
func BenchmarkUploadWriteSize(b *testing.B) {
	for _, size := range []int{32 << 10, 64 << 10, 128 << 10, 0} {
		name := "limits"
		if size > 0 {
			name = strconv.Itoa(size>>10) + "KiB"
		}
		b.Run(name, func(b *testing.B) { benchmarkUpload(b, size) })
	}
}

func benchmarkUpload(b *testing.B, writeCap int) {
	s := startSSHD(b, sshdOptions{})
	src := benchFile(b, benchFileSize)
	dst := filepath.Join(b.TempDir(), "uploaded.bin")
	c, err := Dial(context.Background(), s.config())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.sftpWriteCap = writeCap
	b.SetBytes(benchFileSize)
	cpu := startCPU(syscall.RUSAGE_SELF)
	for b.Loop() {
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.Upload(context.Background(), f, dst, 0o644)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if res.Bytes != benchFileSize {
			b.Fatalf("uploaded %d bytes, want %d", res.Bytes, benchFileSize)
		}
	}
	cpu.report(b)
}

// BenchmarkSCP is the yardstick for BenchmarkUpload: OpenSSH scp (SFTP
// protocol, the default since OpenSSH 9.0) sending the same file to the
// same kind of server.
func BenchmarkSCP(b *testing.B) {
	scp, err := exec.LookPath("scp")
	if err != nil {
		b.Skip("no scp")
	}
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"sftp", nil},
		{"legacy", []string{"-O"}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := startSSHD(b, sshdOptions{})
			src := benchFile(b, benchFileSize)
			dst := filepath.Join(b.TempDir(), "uploaded.bin")
			kh := filepath.Join(b.TempDir(), "known_hosts")
			writeFile(b, kh, []byte(knownhosts.Line([]string{s.addr}, s.hostKey)+"\n"))
			args := append([]string{
				"-q", "-B", "-i", s.clientFile, "-P", strconv.Itoa(portOf(b, s.addr)),
				"-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
				"-o", "Ciphers=" + ssh.CipherAES128GCM,
			}, mode.args...)
			args = append(args, src, s.user+"@"+s.host+":"+dst)
			b.SetBytes(benchFileSize)
			cpu := startCPU(syscall.RUSAGE_CHILDREN)
			for b.Loop() {
				out, err := exec.Command(scp, args...).CombinedOutput()
				if err != nil {
					b.Fatalf("scp: %v: %s", err, out)
				}
			}
			cpu.report(b)
		})
	}
}

func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// cpuMeter measures the client's CPU time (user+system) per operation,
// which unlike MB/s barely depends on what else the machine is running.
// For scp the client is a child process, hence RUSAGE_CHILDREN (sshd's
// own children are reaped by sshd, not counted here).
type cpuMeter struct {
	who   int
	start time.Duration
}

func startCPU(who int) cpuMeter { return cpuMeter{who: who, start: cpuTime(who)} }

func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(cpuTime(m.who)-m.start)/float64(b.N)/1e6, "client-cpu-ms/op")
}

func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
