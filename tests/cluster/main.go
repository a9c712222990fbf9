// slicecache-cluster runs a local Kubernetes control plane for the
// project's real-cluster tests: etcd (embedded from go.etcd.io/etcd/server/v3),
// kube-apiserver and kube-controller-manager (from k8s.io/kubernetes), all
// bound to 127.0.0.1. No kubelet, no scheduler: the tests bring their own
// node shim.
//
// Modes (one binary, each mode its own process):
//
//	slicecache-cluster all --data-dir D --kubeconfig-out K [flags]
//	    generates certificates, keys and a token file into D, starts the three
//	    modes below as child processes, writes an admin kubeconfig to K and
//	    prints "ready: kubeconfig=K apiserver=https://127.0.0.1:PORT".
//	    SIGTERM/SIGINT stop everything; SIGUSR1 restarts kube-apiserver on the
//	    same port, SIGUSR2 kube-controller-manager, SIGHUP etcd.
//	slicecache-cluster etcd --data-dir D --client-port P --peer-port Q
//	slicecache-cluster apiserver [kube-apiserver flags]
//	slicecache-cluster controller-manager [kube-controller-manager flags]
//	slicecache-cluster version
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage: slicecache-cluster MODE [flags]
modes:
  all                 the whole control plane as child processes (see all --help)
  etcd                embedded etcd (see etcd --help)
  apiserver           kube-apiserver; flags are kube-apiserver's own
  controller-manager  kube-controller-manager; flags are its own
  version             print the versions built in
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	mode, args := os.Args[1], os.Args[2:]
	var err error
	switch mode {
	case "all":
		err = runAll(args)
	case "etcd":
		err = runEtcd(args)
	case "apiserver", "kube-apiserver":
		err = runAPIServer(args)
	case "controller-manager", "kube-controller-manager":
		err = runControllerManager(args)
	case "version", "--version":
		printVersion()
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "slicecache-cluster: unknown mode %q\n", mode)
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "slicecache-cluster %s: %v\n", mode, err)
		os.Exit(1)
	}
}
