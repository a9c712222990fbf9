package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultControllers are the kube-controller-manager controllers the tests
// rely on (canonical names of v1.37). No node-lifecycle controller: without
// kubelets it would taint and evict everything.
var defaultControllers = []string{
	"daemonset-controller",
	"deployment-controller",
	"replicaset-controller",
	"garbage-collector-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"endpoints-controller",
	"serviceaccount-token-controller",
	"serviceaccount-controller",
	"namespace-controller",
	"horizontal-pod-autoscaler-controller",
	"disruption-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"statefulset-controller",
	"job-controller",
	"pod-garbage-collector-controller",
	"resourcequota-controller",
	"service-cidr-controller",
	// Generic ephemeral volumes: the claim of each Pod, bound to a
	// PersistentVolume the test provides, and released with the Pod.
	"ephemeral-volume-controller",
	"persistentvolume-binder-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
}

// child is one supervised process: a mode of this same binary.
type child struct {
	name string
	args []string
	log  string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd exits
	err      error
	stopping bool // stop() was called: the exit is expected
}

func (c *child) start(self, pidDir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "\n=== %s: starting %s %s\n", time.Now().Format(time.RFC3339), c.name, strings.Join(c.args, " "))
	cmd := exec.Command(self, c.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A child dies with this process even when it is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	c.cmd, c.done, c.err, c.stopping = cmd, done, nil, false
	pidFile := filepath.Join(pidDir, c.name+".pid")
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.mu.Lock()
		c.err = err
		expected := c.stopping
		c.mu.Unlock()
		close(done)
		if !expected {
			// Tests may kill a child on purpose; say so on stdout.
			fmt.Printf("exited: %s (%v)\n", c.name, err)
		}
	}()
	return nil
}

func (c *child) running() (chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil, false
	}
	select {
	case <-c.done:
		return c.done, false
	default:
		return c.done, true
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs; it returns once the
// process has exited.
func (c *child) stop(grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.stopping = true
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		fmt.Fprintf(os.Stderr, "slicecache-cluster: %s did not stop in %s, killing it\n", c.name, grace)
		_ = cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portsOrFree(ports ...*int) error {
	for _, p := range ports {
		if *p != 0 {
			continue
		}
		got, err := freePort()
		if err != nil {
			return err
		}
		*p = got
	}
	return nil
}

// firstIP returns the first usable address of a CIDR (the kubernetes
// Service's ClusterIP).
func firstIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	ip := n.IP.To4()
	if ip == nil {
		ip = n.IP.To16()
	}
	out := make(net.IP, len(ip))
	copy(out, ip)
	out[len(out)-1]++
	return out, nil
}

func runAll(args []string) error {
	fs := flag.NewFlagSet("all", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data, certificates, keys, logs and pid files (required)")
	kubeconfigOut := fs.String("kubeconfig-out", "", "where to write the admin kubeconfig (default DATA/admin.kubeconfig)")
	apiPort := fs.Int("apiserver-port", 0, "kube-apiserver port on 127.0.0.1 (0 = pick a free one)")
	etcdPort := fs.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (0 = pick a free one)")
	allowPrivileged := fs.Bool("allow-privileged", true, "kube-apiserver --allow-privileged")
	serviceCIDR := fs.String("service-cluster-ip-range", "10.96.0.0/16", "kube-apiserver --service-cluster-ip-range")
	controllers := fs.String("controllers", strings.Join(defaultControllers, ","), "kube-controller-manager --controllers")
	noControllerManager := fs.Bool("no-controller-manager", false, "run etcd and kube-apiserver only")
	etcdNoFsync := fs.Bool("etcd-unsafe-no-fsync", false, "etcd without fsync (faster, not crash safe)")
	verbosity := fs.Int("v", 0, "klog verbosity of kube-apiserver and kube-controller-manager")
	var extraAPI, extraCM multiFlag
	fs.Var(&extraAPI, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--feature-gates=X=true (repeatable)")
	fs.Var(&extraCM, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	readyTimeout := fs.Duration("ready-timeout", 3*time.Minute, "give up when not ready by then")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" {
		return errors.New("--data-dir is required")
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if *kubeconfigOut == "" {
		*kubeconfigOut = filepath.Join(dir, "admin.kubeconfig")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, d := range []string{dir, filepath.Join(dir, "logs"), filepath.Join(dir, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	svcIP, err := firstIP(*serviceCIDR)
	if err != nil {
		return fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	p, err := ensurePKI(dir, svcIP)
	if err != nil {
		return err
	}
	peerPort, cmPort := 0, 0
	if err := portsOrFree(apiPort, etcdPort, &peerPort, &cmPort); err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", *apiPort)
	runDir, logDir := filepath.Join(dir, "run"), filepath.Join(dir, "logs")

	adminKC, err := p.kubeconfig(server, "admin", p.AdminToken)
	if err != nil {
		return err
	}
	cmKCPath := filepath.Join(dir, "controller-manager.kubeconfig")
	cmKC, err := p.kubeconfig(server, "system:kube-controller-manager", p.ControllerTok)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cmKCPath, cmKC, 0o600); err != nil {
		return err
	}
	adminCopy := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(adminCopy, adminKC, 0o600); err != nil {
		return err
	}

	etcdArgs := []string{"etcd", "--data-dir", filepath.Join(dir, "etcd"),
		"--client-port", strconv.Itoa(*etcdPort), "--peer-port", strconv.Itoa(peerPort)}
	if *etcdNoFsync {
		etcdArgs = append(etcdArgs, "--unsafe-no-fsync")
	}
	v := "--v=" + strconv.Itoa(*verbosity)
	apiArgs := []string{"apiserver",
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(*apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CACert,
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(*etcdPort),
		"--token-auth-file=" + p.TokenFile,
		// The aggregation layer (front proxy), as kubeadm sets it up, but
		// with the one cluster CA.
		"--requestheader-client-ca-file=" + p.CACert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.ProxyCert,
		"--proxy-client-key-file=" + p.ProxyKey,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub,
		"--service-account-signing-key-file=" + p.SAKey,
		"--service-cluster-ip-range=" + *serviceCIDR,
		"--allow-privileged=" + strconv.FormatBool(*allowPrivileged),
		"--enable-admission-plugins=NodeRestriction,PodSecurity",
		// The kubernetes Service may not point at a loopback address.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		v,
	}
	apiArgs = append(apiArgs, extraAPI...)
	cmArgs := []string{"controller-manager",
		"--kubeconfig=" + cmKCPath,
		"--authentication-kubeconfig=" + cmKCPath,
		"--authorization-kubeconfig=" + cmKCPath,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(cmPort),
		"--cert-dir=" + filepath.Join(dir, "controller-manager-certs"),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--controllers=" + *controllers,
		"--root-ca-file=" + p.CACert,
		"--service-account-private-key-file=" + p.SAKey,
		"--service-cluster-ip-range=" + *serviceCIDR,
		"--profiling=false",
		v,
	}
	cmArgs = append(cmArgs, extraCM...)

	etcd := &child{name: "etcd", args: etcdArgs, log: filepath.Join(logDir, "etcd.log")}
	api := &child{name: "apiserver", args: apiArgs, log: filepath.Join(logDir, "apiserver.log")}
	cm := &child{name: "controller-manager", args: cmArgs, log: filepath.Join(logDir, "controller-manager.log")}
	children := []*child{etcd, api}
	if !*noControllerManager {
		children = append(children, cm)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAll := func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop(20 * time.Second)
		}
		for _, c := range children {
			os.Remove(filepath.Join(runDir, c.name+".pid"))
		}
	}
	defer stopAll()
	go func() { // a signal during start-up stops everything
		for s := range sigs {
			if s == syscall.SIGTERM || s == syscall.SIGINT {
				cancel()
				return
			}
		}
	}()

	hc := httpClient(p)
	fmt.Fprintf(os.Stderr, "slicecache-cluster: starting etcd on 127.0.0.1:%d (log %s)\n", *etcdPort, etcd.log)
	if err := etcd.start(self, runDir); err != nil {
		return err
	}
	if err := waitFor(ctx, *readyTimeout, etcd, func() bool {
		return httpOK(hc, fmt.Sprintf("http://127.0.0.1:%d/health", *etcdPort), "")
	}); err != nil {
		return fmt.Errorf("etcd: %w (see %s)", err, etcd.log)
	}
	fmt.Fprintf(os.Stderr, "slicecache-cluster: starting kube-apiserver on %s (log %s)\n", server, api.log)
	if err := api.start(self, runDir); err != nil {
		return err
	}
	apiReady := func() bool { return httpOK(hc, server+"/readyz", p.AdminToken) }
	if err := waitFor(ctx, *readyTimeout, api, apiReady); err != nil {
		return fmt.Errorf("kube-apiserver: %w (see %s)", err, api.log)
	}
	if !*noControllerManager {
		fmt.Fprintf(os.Stderr, "slicecache-cluster: starting kube-controller-manager (log %s)\n", cm.log)
		if err := cm.start(self, runDir); err != nil {
			return err
		}
		ic := insecureClient()
		cmHealthy := func() bool { return httpOK(ic, fmt.Sprintf("https://127.0.0.1:%d/healthz", cmPort), "") }
		if err := waitFor(ctx, *readyTimeout, cm, cmHealthy); err != nil {
			return fmt.Errorf("kube-controller-manager: %w (see %s)", err, cm.log)
		}
		// Pods need the default ServiceAccount; the serviceaccount controller
		// makes it.
		saReady := func() bool {
			return httpOK(hc, server+"/api/v1/namespaces/default/serviceaccounts/default", p.AdminToken)
		}
		if err := waitFor(ctx, *readyTimeout, cm, saReady); err != nil {
			return fmt.Errorf("default ServiceAccount: %w (see %s)", err, cm.log)
		}
	}
	if err := writeFileAtomic(*kubeconfigOut, adminKC, 0o600); err != nil {
		return err
	}
	fmt.Printf("ready: kubeconfig=%s apiserver=%s\n", *kubeconfigOut, server)

	// Running: SIGUSR1 restarts kube-apiserver, SIGUSR2 kube-controller-manager,
	// SIGHUP etcd; a child that exits by itself (a test may have killed it)
	// stays down, "exited: NAME" goes to stdout, and the same signals start
	// it again.
	signal.Stop(sigs)
	sigs = make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	if ctx.Err() != nil {
		return nil
	}
	etcdHealthy := func() bool {
		return httpOK(hc, fmt.Sprintf("http://127.0.0.1:%d/health", *etcdPort), "")
	}
	for s := range sigs {
		switch s {
		case syscall.SIGUSR1:
			restart(self, runDir, api, hc, apiReady, *readyTimeout)
		case syscall.SIGUSR2:
			if !*noControllerManager {
				restart(self, runDir, cm, hc, nil, *readyTimeout)
			}
		case syscall.SIGHUP:
			restart(self, runDir, etcd, hc, etcdHealthy, *readyTimeout)
		default:
			fmt.Fprintf(os.Stderr, "slicecache-cluster: %s, stopping\n", s)
			return nil
		}
	}
	return nil
}

func restart(self, runDir string, c *child, hc *http.Client, ready func() bool, timeout time.Duration) {
	fmt.Fprintf(os.Stderr, "slicecache-cluster: restarting %s\n", c.name)
	c.stop(20 * time.Second)
	if err := c.start(self, runDir); err != nil {
		fmt.Fprintf(os.Stderr, "slicecache-cluster: restart %s: %v\n", c.name, err)
		return
	}
	if ready != nil {
		if err := waitFor(context.Background(), timeout, c, ready); err != nil {
			fmt.Fprintf(os.Stderr, "slicecache-cluster: %s after restart: %v\n", c.name, err)
			return
		}
	}
	fmt.Printf("restarted: %s\n", c.name)
}

// waitFor polls ok every 100 ms until it holds, c exits, ctx ends or the
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, c *child, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		if done, alive := c.running(); !alive && done != nil {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return fmt.Errorf("exited: %v", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpClient trusts the cluster CA (kube-apiserver's serving cert).
func httpClient(p *pki) *http.Client {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(p.CACert); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// insecureClient reads kube-controller-manager's /healthz: its serving cert
// is self-signed in its --cert-dir, not issued by the cluster CA.
func insecureClient() *http.Client {
	return &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
}

func httpOK(hc *http.Client, url, token string) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
