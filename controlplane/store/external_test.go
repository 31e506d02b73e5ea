package store_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
)

func TestOpenRefusesUnsafeExternalConfig(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "d")
	many := make([]string, 65)
	for i := range many {
		many[i] = "https://127.0.0.1:2379"
	}
	for _, tc := range []struct {
		name string
		cfg  store.Config
		want string // in the error
	}{
		{"plain http", store.Config{Endpoints: []string{"http://127.0.0.1:2379"}}, "--etcd-insecure"},
		{"plain unix socket", store.Config{Endpoints: []string{"unix:///run/etcd.sock"}}, "--etcd-insecure"},
		{"one plain among TLS", store.Config{Endpoints: []string{"https://10.0.0.1:2379", "http://10.0.0.2:2379"}, Insecure: true}, "mix TLS"},
		{"plain first, TLS after", store.Config{Endpoints: []string{"http://10.0.0.1:2379", "https://10.0.0.2:2379"}, Insecure: true}, "mix TLS"},
		{"TLS files with plain text", store.Config{Endpoints: []string{"http://10.0.0.1:2379"}, Insecure: true, CAFile: "ca.pem"}, "CAFile"},
		{"no scheme", store.Config{Endpoints: []string{"10.0.0.1:2379"}, Insecure: true}, `"10.0.0.1:2379"`},
		{"other scheme", store.Config{Endpoints: []string{"ftp://10.0.0.1:2379"}}, "ftp://10.0.0.1:2379"},
		{"no port", store.Config{Endpoints: []string{"https://etcd-1"}}, "https://HOST:PORT"},
		{"path", store.Config{Endpoints: []string{"https://etcd-1:2379/v3"}}, "https://HOST:PORT"},
		{"empty endpoint", store.Config{Endpoints: []string{""}}, `""`},
		{"empty unix path", store.Config{Endpoints: []string{"unixs://"}}, "unixs:///PATH"},
		{"password in URL", store.Config{Endpoints: []string{"https://root:hunter2@etcd-1:2379"}}, "no user or password"},
		{"too many", store.Config{Endpoints: many}, "at most 64"},
		{"cert without key", store.Config{Endpoints: []string{"https://etcd-1:2379"}, CertFile: "c.pem"}, "CertFile and KeyFile"},
		{"key without cert", store.Config{Endpoints: []string{"https://etcd-1:2379"}, KeyFile: "k.pem"}, "CertFile and KeyFile"},
		{"TLS files for the embedded etcd", store.Config{DataDir: dataDir, CAFile: "ca.pem"}, "external etcd"},
		{"insecure for the embedded etcd", store.Config{DataDir: dataDir, Insecure: true}, "external etcd"},
		{"missing client certificate file", store.Config{Endpoints: []string{"https://etcd-1:2379"}, CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "/nonexistent/c.pem"},
		{"missing CA file", store.Config{Endpoints: []string{"https://etcd-1:2379"}, CAFile: "/nonexistent/ca.pem", CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "/nonexistent/ca.pem"},
		{"TLS without a client certificate", store.Config{Endpoints: []string{"https://etcd-1:2379"}, CAFile: "ca.pem"}, "--etcd-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = storetest.Logger()
			tc.cfg.DialTimeout = 200 * time.Millisecond
			s, err := store.Open(ctxT(t), tc.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%+v) succeeded, want an error", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Error("a refused config created its data dir")
	}
}

// testPKI is a CA and the files an etcd server and its client use.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T, dir, name string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(dir, name+"-ca.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile = filepath.Join(dir, name+"-"+strconv.FormatInt(serial, 10)+".pem")
		keyFile = filepath.Join(dir, name+"-"+strconv.FormatInt(serial, 10)+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue(2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue(3, x509.ExtKeyUsageClientAuth)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLSEtcd starts an etcd that serves clients over TLS on loopback and
// wants their certificates signed by p's CA, as the README sets one up.
// It returns the client URL.
func startTLSEtcd(t *testing.T, p testPKI) string {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		client := url.URL{Scheme: "https", Host: l.Addr().String()}
		l.Close()
		cfg := embed.NewConfig()
		cfg.Dir = filepath.Join(dir, "data")
		cfg.LogLevel = "fatal"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		peer := url.URL{Scheme: "unix", Host: filepath.Join(dir, "peer:0")}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{{Scheme: "unix", Host: "localhost:0"}}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ListenMetricsUrls = nil
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = p.serverCert, p.serverKey
		cfg.ClientTLSInfo.TrustedCAFile = p.caFile
		cfg.ClientTLSInfo.ClientCertAuth = true
		e, err := embed.StartEtcd(cfg)
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
			return client.String()
		case err := <-e.Err():
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("TLS etcd not ready in 30s")
		}
	}
}

func TestOpenExternalTLS(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t, dir, "etcd")
	other := newTestPKI(t, dir, "other")
	endpoint := startTLSEtcd(t, p)
	ctx := ctxT(t)

	s, err := store.Open(ctx, store.Config{
		Endpoints: []string{endpoint},
		CAFile:    p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey,
		Logger: storetest.Logger(),
	})
	if err != nil {
		t.Fatalf("Open over TLS with a client certificate: %v", err)
	}
	if err := s.Put(ctx, store.NodeKey("n1"), node("n1")); err != nil {
		t.Errorf("Put over TLS: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}

	for _, tc := range []struct {
		name string
		cfg  store.Config
	}{
		// Insecure lets it try without a certificate; the server refuses.
		{"no client certificate", store.Config{CAFile: p.caFile, Insecure: true}},
		{"client certificate of another CA", store.Config{CAFile: p.caFile, CertFile: other.clientCert, KeyFile: other.clientKey}},
		{"server not in the system roots", store.Config{CertFile: p.clientCert, KeyFile: p.clientKey}},
		{"server of another CA", store.Config{CAFile: other.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints = []string{endpoint}
			tc.cfg.DialTimeout = time.Second
			tc.cfg.Logger = storetest.Logger()
			if s, err := store.Open(ctx, tc.cfg); err == nil {
				s.Close()
				t.Errorf("Open succeeded, want a refusal")
			}
		})
	}

	// The same server named with http:// is refused before any dialing.
	plain := "http://" + strings.TrimPrefix(endpoint, "https://")
	_, err = store.Open(ctx, store.Config{Endpoints: []string{plain}, Logger: storetest.Logger()})
	if err == nil || !strings.Contains(err.Error(), "has no TLS") {
		t.Errorf("Open(%s) = %v, want a refusal for plain text", plain, err)
	}
}
