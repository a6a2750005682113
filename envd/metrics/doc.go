// Package metrics samples the resource use envd reports on GET /metrics:
// CPU, memory and disk of the machine (or sandbox) it runs in, read from
// /proc and statfs, and from the cgroup envd runs in where that has
// limits: a namespace sandbox's /proc shows the host, its cgroup the
// sandbox's CPU quota, memory limit and use. It keeps the previous CPU
// sample so that each report covers the time since the last one.
//
// It does not enforce limits or export Prometheus metrics.
package metrics
