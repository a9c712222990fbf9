package main

import (
	"fmt"
	"os"
	"runtime/debug"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// runAPIServer runs kube-apiserver with its own flags until SIGTERM/SIGINT.
func runAPIServer(args []string) error {
	cmd := apiserver.NewAPIServerCommand()
	cmd.SetArgs(args)
	return cmd.Execute()
}

// runControllerManager runs kube-controller-manager with its own flags until
// SIGTERM/SIGINT.
func runControllerManager(args []string) error {
	cmd := controllermanager.NewControllerManagerCommand()
	cmd.SetArgs(args)
	return cmd.Execute()
}

func printVersion() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("slicecache-cluster (no build info)")
		return
	}
	fmt.Printf("slicecache-cluster %s\n", info.GoVersion)
	for _, dep := range info.Deps {
		switch dep.Path {
		case "k8s.io/kubernetes", "go.etcd.io/etcd/server/v3", "k8s.io/apiserver", "k8s.io/client-go":
			v := dep.Version
			if dep.Replace != nil {
				v = dep.Replace.Version
			}
			fmt.Printf("  %s %s\n", dep.Path, v)
		}
	}
	_ = os.Stdout.Sync()
}
