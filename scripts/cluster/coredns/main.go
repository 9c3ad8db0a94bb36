// The local cluster's DNS server: CoreDNS with only the plugins a cluster's DNS needs. CoreDNS is
// built this way by design (a main package choosing its plugins); the stock binary links every
// plugin, cloud DNS SDKs included, and takes several times as long to build. install-coredns.sh
// builds this file against the pinned github.com/coredns/coredns.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
