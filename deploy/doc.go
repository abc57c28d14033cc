// Package deploy holds the tests of what is deployed: the container images
// built by `make image` and the Kubernetes manifests beside each agent
// (otelreceiver/dist/kubernetes, telegrafplugin/dist/kubernetes).
package deploy
