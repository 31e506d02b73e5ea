package store_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
)

// tcpListeners returns the local addresses (hex, as /proc prints them) of
// the TCP sockets this process listens on.
func tcpListeners(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) >= 10 && f[3] == "0A" && inodes[f[9]] { // 0A: LISTEN
				out = append(out, f[1])
			}
		}
	}
	return out
}

func TestEmbeddedListensOnlyOnPrivateSockets(t *testing.T) {
	for _, tc := range []struct {
		name string
		// dataDir returns the data dir under a fresh temporary directory.
		dataDir func(tmp string) string
		// endpointPrefix is how Endpoints names the client socket.
		endpointPrefix func(dataDir string) string
	}{
		{
			name:           "short path",
			dataDir:        func(tmp string) string { return filepath.Join(tmp, "d") },
			endpointPrefix: func(dataDir string) string { return "unix://" + filepath.Join(dataDir, "etcd", "client.sock") },
		},
		{
			// Longer than a sockaddr can name: reached through a
			// descriptor of the directory.
			name:           "path longer than a socket address",
			dataDir:        func(tmp string) string { return filepath.Join(tmp, strings.Repeat("deep/", 25)) },
			endpointPrefix: func(string) string { return "unix:///proc/self/fd/" },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			dataDir := tc.dataDir(t.TempDir())
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				t.Fatal(err)
			}
			// A directory left wider by an older version or by hand.
			etcdDir := filepath.Join(dataDir, store.EmbeddedDir)
			if err := os.Mkdir(etcdDir, 0o755); err != nil {
				t.Fatal(err)
			}
			s, err := store.Open(ctx, store.Config{DataDir: dataDir, Logger: storetest.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()

			if got := tcpListeners(t); len(got) > 0 {
				t.Errorf("the process listens on TCP %v with only an embedded etcd open, want no TCP listener", got)
			}
			eps := s.Endpoints()
			if len(eps) != 1 || !strings.HasPrefix(eps[0], tc.endpointPrefix(dataDir)) {
				t.Errorf("Endpoints() = %q, want one starting with %q", eps, tc.endpointPrefix(dataDir))
			}
			if fi, err := os.Stat(etcdDir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v, %v; want a directory with mode 0700", etcdDir, fi, err)
			}
			for _, name := range []string{store.EmbeddedClientSocket, "peer.sock"} {
				fi, err := os.Stat(filepath.Join(etcdDir, name))
				if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v, %v; want a socket with mode 0600", name, fi, err)
				}
			}
			if err := s.Put(ctx, store.NodeKey("n1"), node("n1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// It comes back with its data on the same sockets.
			s, err = store.Open(ctx, store.Config{DataDir: dataDir, Logger: storetest.Logger()})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s.Close()
			if found, _, err := s.Get(ctx, store.NodeKey("n1"), node("")); err != nil || !found {
				t.Errorf("Get after reopen = %v, %v; want found", found, err)
			}
		})
	}
}
