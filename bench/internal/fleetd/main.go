// Command fleetd runs an in-process SSH fleet (internal/simfleet) in a
// process of its own, for the benchmarks whose fleets do not fit in one
// process: a fleet host holds two listening sockets, so 10,000 hosts need
// 20,000 descriptors, which is this machine's hard limit per process.
//
// It writes a manifest (every host's name, addresses and root) and a
// known_hosts file, prints "ready", then answers commands on standard
// input, one per line:
//
//	stats   prints one JSON line: the fleet's counters summed over hosts
//
// It closes the fleet and exits when standard input ends (the benchmark
// closed it, or died) or on SIGTERM, so it never outlives its benchmark.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/simfleet"
)

// Host is one line of the manifest.
type Host struct {
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	HealthAddr string `json:"health_addr"`
	Root       string `json:"root"`
}

// Stats are the fleet's counters, summed over its hosts.
type Stats struct {
	Connections int64 `json:"connections"`
	Execs       int64 `json:"execs"`
	SFTPWrites  int64 `json:"sftp_writes"`
	SFTPBytes   int64 `json:"sftp_bytes"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fleetd:", err)
		os.Exit(1)
	}
}

func run() error {
	hosts := flag.Int("hosts", 1, "number of hosts")
	dir := flag.String("dir", "", "parent `directory` of the host roots")
	clientKey := flag.String("client-key", "", "authorized_keys `file` whose keys may log in")
	prefix := flag.String("prefix", simfleet.DefaultNamePrefix, "host name prefix")
	servicePath := flag.String("service-path", simfleet.DefaultServicePath, "deploy path, relative to each host root, that health checks watch")
	manifest := flag.String("manifest", "", "write the host list (JSON) to this `file`")
	knownHosts := flag.String("known-hosts", "", "write the hosts' known_hosts to this `file`")
	shellName := flag.String("shell", "interp", "how hosts run commands: interp (in this process, simfleet.ShellInterp) or process (/bin/sh)")
	flag.Parse()
	shell := simfleet.ShellInterp
	switch *shellName {
	case "interp":
	case "process":
		shell = simfleet.ShellProcess
	default:
		return fmt.Errorf("-shell %q: want interp or process", *shellName)
	}
	if *dir == "" || *clientKey == "" || *manifest == "" || *knownHosts == "" {
		return errors.New("-dir, -client-key, -manifest and -known-hosts are required")
	}
	if err := raiseNoFile(); err != nil {
		return err
	}
	keys, err := readAuthorizedKeys(*clientKey)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	fl, err := simfleet.Start(ctx, simfleet.Config{
		Hosts:       *hosts,
		Dir:         *dir,
		ClientKeys:  keys,
		ServicePath: *servicePath,
		NamePrefix:  *prefix,
		Shell:       shell,
	})
	cancel()
	if err != nil {
		return err
	}
	defer fl.Close()
	if err := fl.WriteKnownHosts(*knownHosts); err != nil {
		return err
	}
	list := make([]Host, 0, *hosts)
	for _, h := range fl.Hosts() {
		list = append(list, Host{Name: h.Name, Addr: h.Addr, HealthAddr: h.HealthAddr, Root: h.Root})
	}
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*manifest, data, 0o644); err != nil {
		return err
	}
	fmt.Println("ready")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-stop:
			return fl.Close()
		case line, ok := <-lines:
			if !ok {
				return fl.Close()
			}
			switch line {
			case "stats":
				var s Stats
				for _, h := range fl.Hosts() {
					hs := h.Stats()
					s.Connections += hs.Connections
					s.Execs += hs.Execs
					s.SFTPWrites += hs.SFTPWrites
					s.SFTPBytes += hs.SFTPBytes
				}
				out, _ := json.Marshal(s)
				fmt.Println(string(out))
			default:
				fmt.Printf("{\"error\":%q}\n", "unknown command "+line)
			}
		}
	}
}

// raiseNoFile lifts the soft open files limit to the hard one: two
// listeners per host, plus the connections.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func readAuthorizedKeys(path string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ssh.PublicKey
	for len(data) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			break // no more keys
		}
		keys = append(keys, k)
		data = rest
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no public key", path)
	}
	return keys, nil
}
