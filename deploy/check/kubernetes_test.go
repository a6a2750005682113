package check

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// TestKubernetesManifests decodes every document of deploy/kubernetes
// strictly into its kind's API type and checks that the pieces fit.
func TestKubernetesManifests(t *testing.T) {
	files, err := filepath.Glob("../kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m manifest
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if err := m.add(doc); err != nil {
				t.Errorf("%s document %d: %v", f, i+1, err)
			}
		}
		for _, err := range m.check() {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// manifest is the objects of one file, by kind.
type manifest struct {
	namespaces  []corev1.Namespace
	claims      []corev1.PersistentVolumeClaim
	services    []corev1.Service
	deployments []appsv1.Deployment
	daemonSets  []appsv1.DaemonSet
}

func (m *manifest) add(doc []byte) error {
	var head struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	var obj any
	switch head.APIVersion + " " + head.Kind {
	case "v1 Namespace":
		m.namespaces = append(m.namespaces, corev1.Namespace{})
		obj = &m.namespaces[len(m.namespaces)-1]
	case "v1 PersistentVolumeClaim":
		m.claims = append(m.claims, corev1.PersistentVolumeClaim{})
		obj = &m.claims[len(m.claims)-1]
	case "v1 Service":
		m.services = append(m.services, corev1.Service{})
		obj = &m.services[len(m.services)-1]
	case "apps/v1 Deployment":
		m.deployments = append(m.deployments, appsv1.Deployment{})
		obj = &m.deployments[len(m.deployments)-1]
	case "apps/v1 DaemonSet":
		m.daemonSets = append(m.daemonSets, appsv1.DaemonSet{})
		obj = &m.daemonSets[len(m.daemonSets)-1]
	default:
		return fmt.Errorf("kind %q of %q: not one this check knows", head.Kind, head.APIVersion)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

// check reports what does not fit: a workload whose selector misses its
// pods, a mount of a volume it lacks, a probe of a port it does not
// name, a claim or Service selecting nothing, a namespace not made here.
func (m *manifest) check() []error {
	var errs []error
	ns := map[string]bool{}
	for _, n := range m.namespaces {
		ns[n.Name] = true
	}
	claims := map[string]bool{}
	for _, c := range m.claims {
		claims[c.Name] = true
	}
	pods := map[string]corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		errs = append(errs, workload("Deployment "+d.Name, d.Namespace, ns, d.Spec.Selector.MatchLabels, d.Spec.Template, claims)...)
		pods[d.Name] = d.Spec.Template
	}
	for _, d := range m.daemonSets {
		errs = append(errs, workload("DaemonSet "+d.Name, d.Namespace, ns, d.Spec.Selector.MatchLabels, d.Spec.Template, claims)...)
		pods[d.Name] = d.Spec.Template
	}
	for _, s := range m.services {
		if !ns[s.Namespace] {
			errs = append(errs, fmt.Errorf("Service %s: namespace %q not made here", s.Name, s.Namespace))
		}
		errs = append(errs, serviceFits(s, pods)...)
	}
	return errs
}

func workload(name, namespace string, ns map[string]bool, selector map[string]string, pod corev1.PodTemplateSpec, claims map[string]bool) []error {
	var errs []error
	if !ns[namespace] {
		errs = append(errs, fmt.Errorf("%s: namespace %q not made here", name, namespace))
	}
	if len(selector) == 0 || !labels.SelectorFromSet(selector).Matches(labels.Set(pod.Labels)) {
		errs = append(errs, fmt.Errorf("%s: selector %v does not match its pods' labels %v", name, selector, pod.Labels))
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
		if c := v.PersistentVolumeClaim; c != nil && !claims[c.ClaimName] {
			errs = append(errs, fmt.Errorf("%s: volume %s claims %q, not made here", name, v.Name, c.ClaimName))
		}
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Image == "" || len(c.Args)+len(c.Command) == 0 {
			errs = append(errs, fmt.Errorf("%s: container %s has no image or no command", name, c.Name))
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				errs = append(errs, fmt.Errorf("%s: container %s mounts %s, which the pod lacks", name, c.Name, vm.Name))
			}
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if port := probePort(p); port != "" && !ports[port] {
				errs = append(errs, fmt.Errorf("%s: container %s probes port %q, which it does not name", name, c.Name, port))
			}
		}
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Name != "roost" {
				errs = append(errs, fmt.Errorf("%s: env %s reads Secret %q, not the documented roost", name, e.Name, r.SecretKeyRef.Name))
			}
		}
		if !strings.Contains(strings.Join(append(c.Command, c.Args...), " "), "roost") {
			errs = append(errs, fmt.Errorf("%s: container %s does not run roost", name, c.Name))
		}
	}
	return errs
}

func probePort(p *corev1.Probe) string {
	switch {
	case p == nil:
		return ""
	case p.HTTPGet != nil:
		return p.HTTPGet.Port.String()
	case p.TCPSocket != nil:
		return p.TCPSocket.Port.String()
	}
	return ""
}

// serviceFits checks that s selects some workload's pods and targets
// ports they name.
func serviceFits(s corev1.Service, pods map[string]corev1.PodTemplateSpec) []error {
	for _, pod := range pods {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			continue
		}
		named := map[string]bool{}
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				named[p.Name] = true
			}
		}
		var errs []error
		for _, p := range s.Spec.Ports {
			if !named[p.TargetPort.String()] {
				errs = append(errs, fmt.Errorf("Service %s: target port %q is not one its pods name", s.Name, p.TargetPort.String()))
			}
		}
		return errs
	}
	return []error{fmt.Errorf("Service %s: selector %v matches no workload here", s.Name, s.Spec.Selector)}
}
