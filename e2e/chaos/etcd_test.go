package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMembers is the size of the test's etcd cluster.
const etcdMembers = 3

// etcdAttempts bounds retries when another test took one of the chosen
// loopback addresses first.
const etcdAttempts = 3

var readyRE = regexp.MustCompile(`^ready$`)

// startEtcd starts a cluster of etcdMembers member processes, each on its
// own loopback IP, and returns their client URLs once every member serves.
// The members are stopped when the test ends.
func startEtcd(t *testing.T) []string {
	t.Helper()
	bin := bins(t).etcd
	var lastErr error
	for attempt := 0; attempt < etcdAttempts; attempt++ {
		// 127.R.X.1..3: a block no other test is likely to use.
		base := fmt.Sprintf("127.%d.%d.", rand.IntN(235)+16, rand.IntN(254)+1)
		var names, clients, peers []string
		for i := 1; i <= etcdMembers; i++ {
			ip := base + fmt.Sprint(i)
			names = append(names, fmt.Sprintf("etcd-%d", i))
			clients = append(clients, "http://"+net.JoinHostPort(ip, "2379"))
			peers = append(peers, "http://"+net.JoinHostPort(ip, "2380"))
		}
		var cluster []string
		for i := range names {
			cluster = append(cluster, names[i]+"="+peers[i])
		}
		dir := t.TempDir()
		var members []*proc
		for i, name := range names {
			members = append(members, startProc(t, name, 10*time.Second, bin,
				"--name", name,
				"--data-dir", filepath.Join(dir, name),
				"--client-url", clients[i],
				"--peer-url", peers[i],
				"--initial-cluster", strings.Join(cluster, ","),
			))
		}
		if lastErr = waitMembers(members, time.Minute); lastErr == nil {
			return clients
		}
		for _, m := range members {
			m.kill()
		}
		t.Logf("etcd cluster on %sx did not start (attempt %d): %v", base, attempt+1, lastErr)
	}
	t.Fatalf("etcd cluster did not start after %d attempts: %v", etcdAttempts, lastErr)
	return nil
}

// waitMembers waits until every member printed "ready", or one exited.
func waitMembers(members []*proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready := 0
		for _, m := range members {
			if m.logged(readyRE) > 0 {
				ready++
				continue
			}
			if m.exited() {
				return fmt.Errorf("%s exited: %s", m.name, m.tail(2<<10))
			}
		}
		if ready == len(members) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d members ready after %v", ready, len(members), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// etcdClient connects to the cluster for the test's own reads; closed
// when the test ends.
func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "/outpost/", clientv3.WithCountOnly()); err != nil {
		t.Fatalf("etcd at %v: %v", endpoints, err)
	}
	return c
}
