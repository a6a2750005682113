package firecracker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// needsFullSpec are the validator cases that use parts of the API the
// driver does not (and our description therefore lacks): they run only
// where Firecracker's own description is here.
var needsFullSpec = map[string]bool{
	"machine config full": true, "drive": true, "drive patch": true, "net": true, "snapshot load backend": true,
	"snapshot load deprecated mem_file_path": true, "mmds config": true, "mmds patch": true, "metrics string map": true,
	"vsock": true, "optional body absent": true, "blank body is no body": true, "method not allowed": true,
	"unknown query": true, "body where none taken": true, "nested type": true, "array item ref": true,
	"huge number": true, "huge integer below minimum": true, "string map value": true, "ref enum": true,
	"nested minimum": true, "unknown nested field": true, "old snapshot field name": true, "drive id mismatch": true,
	"iface id mismatch": true, "pmem id mismatch": true,
}

func TestAPISpecValidator(t *testing.T) {
	spec, full := loadAPISpec(t)
	const drive = `{"drive_id":"rootfs","path_on_host":"/img/rootfs.ext4","is_root_device":true,"is_read_only":false,
		"cache_type":"Writeback","io_engine":"Async","partuuid":"abc",
		"rate_limiter":{"bandwidth":{"size":1048576,"refill_time":100},"ops":{"size":100,"one_time_burst":10,"refill_time":1000}}}`
	tests := []struct {
		name, method, path, body string
		wantErr                  []string // substrings; none means the request is valid
	}{
		// Valid requests, as the driver sends them.
		{"root", "GET", "/", "", nil},
		{"machine config", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":512}`, nil},
		{"machine config full", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":1024,"smt":false,"track_dirty_pages":true,"huge_pages":"2M","cpu_template":"None"}`, nil},
		{"start", "PUT", "/actions", `{"action_type":"InstanceStart"}`, nil},
		{"pause", "PATCH", "/vm", `{"state":"Paused"}`, nil},
		{"resume", "PATCH", "/vm", `{"state":"Resumed"}`, nil},
		{"drive", "PUT", "/drives/rootfs", drive, nil},
		{"drive patch", "PATCH", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/img/new.ext4"}`, nil},
		{"net", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02","mtu":1500,
			"tx_rate_limiter":{"bandwidth":{"size":200000000,"one_time_burst":100000000,"refill_time":1000}}}`, nil},
		{"snapshot create", "PUT", "/snapshot/create", `{"snapshot_type":"Full","snapshot_path":"/s/vm.snap","mem_file_path":"/s/vm.mem"}`, nil},
		{"snapshot load backend", "PUT", "/snapshot/load", `{"snapshot_path":"/s/vm.snap","mem_backend":{"backend_type":"File","backend_path":"/s/vm.mem"},
			"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"vsock_override":{"uds_path":"/s/v.sock"}}`, nil},
		{"snapshot load deprecated mem_file_path", "PUT", "/snapshot/load", `{"snapshot_path":"/s/vm.snap","mem_file_path":"/s/vm.mem"}`, nil},
		{"mmds config", "PUT", "/mmds/config", `{"version":"V2","network_interfaces":["eth0"],"ipv4_address":"169.254.169.254"}`, nil},
		{"mmds free-form", "PUT", "/mmds", `{"latest":{"meta-data":{"ami-id":"x","n":[1,2.5,{"deep":null}],"ok":true}},"any_key":"v"}`, nil},
		{"mmds patch", "PATCH", "/mmds", `{"latest":{"meta-data":{"ami-id":null}}}`, nil},
		{"logger", "PUT", "/logger", `{"log_path":"/log/fc.log","level":"Debug","show_level":true,"show_log_origin":false}`, nil},
		{"logger level Off", "PUT", "/logger", `{"level":"Off"}`, nil},
		{"boot source", "PUT", "/boot-source", `{"kernel_image_path":"/k/vmlinux","boot_args":"console=ttyS0 reboot=k panic=1","initrd_path":"/k/initrd"}`, nil},
		{"metrics string map", "PUT", "/metrics", `{"metrics_path":"/m","properties":{"team":"roost"}}`, nil},
		{"vsock", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`, nil},
		{"optional body absent", "PATCH", "/balloon/hinting/start", "", nil},
		{"blank body is no body", "GET", "/version", " \n", nil},

		// Routing.
		{"unknown path", "PUT", "/drive/rootfs", `{}`, []string{"/drive/rootfs", "no such path"}},
		{"empty path param", "PUT", "/drives/", `{}`, []string{"no such path"}},
		{"extra segment", "PUT", "/drives/a/b", `{}`, []string{"no such path"}},
		{"method not allowed", "DELETE", "/drives/rootfs", "", []string{"DELETE /drives/{drive_id}", "method not allowed", "PATCH, PUT"}},
		{"unknown query", "GET", "/machine-config?verbose=1", "", []string{"query.verbose", "unknown"}},

		// Presence of a body.
		{"body where none taken", "GET", "/machine-config", `{}`, []string{"GET /machine-config", "takes no body"}},
		{"required body missing", "PUT", "/actions", "", []string{"PUT /actions", "body: required"}},
		{"invalid JSON", "PUT", "/actions", `{"action_type":`, []string{"invalid JSON"}},
		{"trailing JSON", "PUT", "/actions", `{"action_type":"InstanceStart"} {}`, []string{"invalid JSON", "trailing"}},

		// Types at every depth.
		{"nested type", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":true,"rate_limiter":{"bandwidth":{"size":"1","refill_time":1}}}`,
			[]string{"PUT /drives/{drive_id}: body.rate_limiter.bandwidth.size: want integer, got string"}},
		{"fraction is not integer", "PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":512}`, []string{"body.vcpu_count: want integer, got number"}},
		{"exponent is not integer", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":5e2}`, []string{"body.mem_size_mib: want integer"}},
		{"boolean", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":"yes"}`, []string{"body.is_root_device: want boolean, got string"}},
		{"top-level object", "PUT", "/actions", `["InstanceStart"]`, []string{"body: want object, got array"}},
		{"null object", "PATCH", "/vm", `null`, []string{"body: want object, got null"}},
		{"array", "PUT", "/mmds/config", `{"network_interfaces":"eth0"}`, []string{"body.network_interfaces: want array, got string"}},
		{"array item", "PUT", "/mmds/config", `{"network_interfaces":["eth0",1]}`, []string{"body.network_interfaces[1]: want string, got integer"}},
		{"array item ref", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m","network_overrides":[{"iface_id":"eth0"}]}`,
			[]string{"body.network_overrides[0].host_dev_name: required field missing"}},
		{"huge number", "PUT", "/vsock", `{"guest_cid":1e99999999999,"uds_path":"/v"}`, []string{"body.guest_cid: want integer, got number"}},
		{"huge integer below minimum", "PUT", "/vsock", `{"guest_cid":-99999999999999999999999,"uds_path":"/v"}`, []string{"body.guest_cid", "below minimum 3"}},
		{"string map value", "PUT", "/metrics", `{"metrics_path":"/m","properties":{"n":1}}`, []string{"body.properties.n: want string, got integer"}},
		{"mmds must be an object", "PUT", "/mmds", `"text"`, []string{"body: want object, got string"}},

		// Required, enums, bounds.
		{"required", "PUT", "/machine-config", `{"vcpu_count":1}`, []string{"body.mem_size_mib: required field missing"}},
		{"nested required", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"File"}}`, []string{"body.mem_backend.backend_path: required field missing"}},
		{"action enum", "PUT", "/actions", `{"action_type":"InstanceStop"}`, []string{"body.action_type", `"InstanceStop" not in enum`}},
		{"vm state enum", "PATCH", "/vm", `{"state":"Running"}`, []string{"body.state", "not in enum"}},
		{"snapshot type enum", "PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"Incremental"}`, []string{"body.snapshot_type", "not in enum"}},
		{"ref enum", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":512,"cpu_template":"T3"}`, []string{"body.cpu_template", "not in enum"}},
		{"below minimum", "PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":512}`, []string{"body.vcpu_count: 0 below minimum 1"}},
		{"above maximum", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":512}`, []string{"body.vcpu_count: 33 above maximum 32"}},
		{"nested minimum", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","tx_rate_limiter":{"ops":{"size":-1,"refill_time":1}}}`,
			[]string{"body.tx_rate_limiter.ops.size: -1 below minimum 0"}},

		// Unknown fields (serde deny_unknown_fields).
		{"unknown field", "PUT", "/boot-source", `{"kernel_image_path":"/k","kernel_args":"x"}`, []string{"body.kernel_args: unknown field"}},
		{"unknown nested field", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":true,"rate_limiter":{"bandwidth":{"size":1,"refill_time":1,"burst":1}}}`,
			[]string{"body.rate_limiter.bandwidth.burst: unknown field"}},
		{"old snapshot field name", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m","mem_backend_path":"/m"}`, []string{"body.mem_backend_path: unknown field"}},

		// Path parameter repeated in the body.
		{"drive id mismatch", "PUT", "/drives/rootfs", strings.Replace(drive, `"drive_id":"rootfs"`, `"drive_id":"data"`, 1),
			[]string{"body.drive_id", "data", `path drive_id "rootfs"`}},
		{"iface id mismatch", "PATCH", "/network-interfaces/eth0", `{"iface_id":"eth1"}`, []string{"body.iface_id", `path iface_id "eth0"`}},
		{"pmem id mismatch", "PUT", "/pmem/p0", `{"id":"p1","path_on_host":"/p"}`, []string{"body.id", `path id "p0"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if needsFullSpec[tt.name] && !full {
				t.Skip("needs Firecracker's own API description")
			}
			err := spec.check(tt.method, tt.path, []byte(tt.body))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("check: unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("check: accepted, want error mentioning %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("check: error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestAPISpecMissingFile(t *testing.T) {
	_, err := parseAPISpec("testdata/no-such-spec.yaml")
	if err == nil || !strings.Contains(err.Error(), "no-such-spec.yaml") {
		t.Fatalf("parseAPISpec: got %v, want an error naming the missing file", err)
	}
}

func TestAPISpecRejectsUnsupportedSchema(t *testing.T) {
	for name, yml := range map[string]string{
		"allOf":               "paths: {/: {get: {}}}\ndefinitions: {A: {allOf: [{type: object}]}}",
		"dangling":            "paths: {/: {get: {}}}\ndefinitions: {A: {properties: {b: {$ref: '#/definitions/B'}}}}",
		"body without schema": "paths: {/: {get: {parameters: [{name: b, in: body}]}}}\ndefinitions: {A: {}}",
	} {
		path := filepath.Join(t.TempDir(), "spec.yaml")
		if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := parseAPISpec(path); err == nil {
			t.Errorf("%s: parseAPISpec accepted a spec the validator cannot check", name)
		}
	}
}

// FuzzAPISpecCheck: the validator reads arbitrary request bodies and must
// answer with an error, never a panic.
func FuzzAPISpecCheck(f *testing.F) {
	spec, _ := loadAPISpec(f)
	f.Add("PUT", "/drives/rootfs", []byte(`{"drive_id":"rootfs","is_root_device":true}`))
	f.Add("PUT", "/mmds", []byte(`{"a":[1,{"b":null}]}`))
	f.Add("PATCH", "/vm?x=%zz", []byte(`{"state":1e400}`))
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		_ = spec.check(method, path, body)
	})
}
