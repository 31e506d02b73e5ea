// Command etcdmember runs one member of an etcd cluster, for the chaos
// tests: they start three as separate processes on loopback, so that
// killing a control plane never takes etcd with it, as in production.
//
// It is built from the etcd server in go.mod (go.etcd.io/etcd/server/v3/embed),
// so the tests need no etcd binary. It prints "ready" on standard output
// once the member serves, and stops cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("etcdmember", flag.ContinueOnError)
	name := fs.String("name", "", "member name (required)")
	dir := fs.String("data-dir", "", "data directory (required)")
	client := fs.String("client-url", "", "client URL to listen on and advertise, http://IP:PORT (required)")
	peer := fs.String("peer-url", "", "peer URL to listen on and advertise, http://IP:PORT (required)")
	cluster := fs.String("initial-cluster", "", "name=peer-url,... of every member (required)")
	token := fs.String("cluster-token", "outpost-chaos", "initial cluster token")
	startTimeout := fs.Duration("start-timeout", time.Minute, "how long to wait for the cluster to form")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *dir == "" || *client == "" || *peer == "" || *cluster == "" {
		return errors.New("--name, --data-dir, --client-url, --peer-url and --initial-cluster are required")
	}
	cu, err := url.Parse(*client)
	if err != nil {
		return fmt.Errorf("--client-url: %w", err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		return fmt.Errorf("--peer-url: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = *cluster
	cfg.InitialClusterToken = *token
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.LogLevel = "fatal" // start errors are returned; shutdown is noisy at lower levels
	// No metrics or pprof listeners: nothing but the two URLs above.
	cfg.ListenMetricsUrls = nil

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Close()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithTimeout(context.Background(), *startTimeout)
	defer cancel()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		return fmt.Errorf("serve: %w", err)
	case <-sig:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("not ready within %v (are the other members up?)", *startTimeout)
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("serve: %w", err)
	case <-sig:
		return nil
	}
}
