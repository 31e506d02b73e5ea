// Package cosigntest runs the real cosign CLI for tests: it finds (or
// builds once, from tools/cosign/go.mod) the cosign binary kept beside
// Go's build cache, makes key pairs and signs artifacts the way a build
// system would, offline.
package cosigntest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds the first build of cosign (about five minutes on a
// two-core machine; seconds once Go's cache holds it).
const buildTimeout = 25 * time.Minute

// password protects the test keys; cosign reads it from COSIGN_PASSWORD,
// never from its arguments.
const password = "outpost-test-password"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of the cosign binary: $OUTPOST_COSIGN when set,
// else <GOCACHE>/../outpost-tools/cosign, built there first when it is
// missing (`make cosign` does the same ahead of `make test`).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binPath, buildErr = locate() })
	if buildErr != nil {
		t.Fatalf("cosign: %v", buildErr)
	}
	return binPath
}

func locate() (string, error) {
	if p := os.Getenv("OUTPOST_COSIGN"); p != "" {
		return p, nil
	}
	cache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	out := filepath.Join(filepath.Dir(strings.TrimSpace(string(cache))), "outpost-tools", "cosign")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// Built under a temporary name and renamed, so a concurrent test
	// package never runs a half-written binary.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-modfile=tools/cosign/go.mod", "-o", tmp, "github.com/sigstore/cosign/v2/cmd/cosign")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build cosign: %v\n%s", err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}

// moduleRoot finds the outpost module's directory from the test's
// working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the outpost module")
	}
	return filepath.Dir(mod), nil
}

// run runs cosign in dir with the key password in its environment and
// no network proxy, and fails the test on error.
func run(t testing.TB, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD="+password, "HOME="+dir, "TUF_ROOT="+filepath.Join(dir, ".sigstore"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// KeyPair is a cosign key pair on disk.
type KeyPair struct {
	// Key is the encrypted private key file (cosign.key).
	Key string
	// Pub is the PEM public key file (cosign.pub).
	Pub string
}

// PublicPEM returns the public key's PEM text.
func (k KeyPair) PublicPEM(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(k.Pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// GenerateKeyPair runs `cosign generate-key-pair` in a new directory
// under dir.
func GenerateKeyPair(t testing.TB, dir string) KeyPair {
	t.Helper()
	d, err := os.MkdirTemp(dir, "cosign-key-")
	if err != nil {
		t.Fatal(err)
	}
	run(t, d, "generate-key-pair")
	return KeyPair{Key: filepath.Join(d, "cosign.key"), Pub: filepath.Join(d, "cosign.pub")}
}

// SignBlob signs artifact with k offline, as a build system would
// (`cosign sign-blob --key cosign.key --bundle F --new-bundle-format
// --tlog-upload=false`), and returns the bundle's path (artifact.bundle
// beside a copy kept in a new directory, so that several keys may sign
// one artifact).
func (k KeyPair) SignBlob(t testing.TB, artifact string) string {
	t.Helper()
	d, err := os.MkdirTemp(filepath.Dir(artifact), "bundle-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(d, filepath.Base(artifact)+".bundle")
	run(t, d, "sign-blob", "--yes", "--key", k.Key, "--bundle", out, "--new-bundle-format", "--tlog-upload=false", artifact)
	return out
}
