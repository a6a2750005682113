package firecracker

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Our description of the API (factsAPISpecFile) says what Firecracker's
// own says, for every path, method and field it lists.
func TestAPIFactsAgreeWithSpec(t *testing.T) {
	if _, full := loadAPISpec(t); !full {
		t.Skipf("Firecracker's API description is not here (%v): nothing to compare %s with", fullSpecErr, factsAPISpecFile)
	}
	for _, d := range disagreements(factsSpec, fullSpec) {
		t.Error(d)
	}
}

// The comparison finds each kind of disagreement.
func TestAPIFactsDisagreements(t *testing.T) {
	const theirs = `
paths:
  /vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/Vm"}}]}}
  /drives/{drive_id}: {put: {parameters: [{name: drive_id, in: path, required: true, type: string}]}}
definitions:
  Vm:
    type: object
    required: [state]
    properties:
      state: {type: string, enum: [Paused, Resumed]}
      vcpus: {type: integer, minimum: 1}
`
	for name, tc := range map[string]struct{ ours, want string }{
		"agree": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string, enum: [Paused]}}}}`, ""},
		"unknown path": {`
paths: {/vms: {patch: {}}}
definitions: {x: {}}`, "PATCH /vms: not in Firecracker's API"},
		"unknown method": {`
paths: {/vm: {put: {}}}
definitions: {x: {}}`, "PUT /vm: not in Firecracker's API"},
		"body not required": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string, enum: [Paused]}}}}`, "body parameter required false, Firecracker says true"},
		"no path parameter": {`
paths: {"/drives/{drive_id}": {put: {}}}
definitions: {x: {}}`, "PUT /drives/{drive_id}: parameter drive_id (path) missing"},
		"unknown field": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string, enum: [Paused]}, mood: {type: string}}}}`, "body.mood: not in Firecracker's API"},
		"wrong type": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: integer}}}}`, "body.state: type integer, Firecracker says string"},
		"required differs": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, properties: {state: {type: string, enum: [Paused]}}}}`, "body: required [], Firecracker says [state]"},
		"enum value": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string, enum: [Running]}}}}`, `body.state: value "Running" not in Firecracker's enum`},
		"no enum": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string}}}}`, "body.state: no enum, Firecracker has"},
		"bound": {`
paths: {/vm: {patch: {parameters: [{name: body, in: body, required: true, schema: {$ref: "#/definitions/vm"}}]}}}
definitions: {vm: {type: object, required: [state], properties: {state: {type: string, enum: [Paused]}, vcpus: {type: integer}}}}`, "body.vcpus: minimum <nil>, Firecracker says 1"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, body string) *apiSpec {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				s, err := parseAPISpec(p)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			got := strings.Join(disagreements(write("ours.yaml", tc.ours), write("theirs.yaml", theirs)), "\n")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("disagreements:\n%s\nwant one saying %q", got, tc.want)
			}
		})
	}
}

// disagreements lists where ours says other than full about what ours
// describes: a path, method, parameter or field full lacks, or one whose
// type, requiredness, allowed values or bounds differ.
func disagreements(ours, full *apiSpec) []string {
	var out []string
	for _, tmpl := range sortedKeys(ours.Paths) {
		for _, method := range sortedKeys(ours.Paths[tmpl]) {
			at := strings.ToUpper(method) + " " + tmpl
			fop := full.Paths[tmpl][method]
			if fop == nil {
				out = append(out, at+": not in Firecracker's API")
				continue
			}
			out = append(out, paramDisagreements(at, ours, full, ours.Paths[tmpl][method], fop)...)
		}
	}
	return out
}

// paramDisagreements compares the path and body parameters of an
// operation.
func paramDisagreements(at string, ours, full *apiSpec, op, fop *apiOperation) []string {
	var out []string
	for _, fp := range fop.Parameters {
		if fp.In != "path" && fp.In != "body" {
			continue // optional query parameters the driver does not use
		}
		i := slices.IndexFunc(op.Parameters, func(p apiParameter) bool { return sameParam(p, fp) })
		if i < 0 {
			out = append(out, fmt.Sprintf("%s: parameter %s (%s) missing", at, fp.Name, fp.In))
			continue
		}
		p := op.Parameters[i]
		if p.Required != fp.Required || p.Type != fp.Type {
			out = append(out, fmt.Sprintf("%s: %s parameter required %v, Firecracker says %v (type %q, %q)", at, fp.In, p.Required, fp.Required, p.Type, fp.Type))
		}
		if fp.In == "body" {
			out = append(out, schemaDisagreements(at+": body", ours, full, p.Schema, fp.Schema)...)
		}
	}
	for _, p := range op.Parameters {
		if !slices.ContainsFunc(fop.Parameters, func(fp apiParameter) bool { return sameParam(p, fp) }) {
			out = append(out, fmt.Sprintf("%s: parameter %s (%s) not in Firecracker's API", at, p.Name, p.In))
		}
	}
	return out
}

// sameParam says whether p and q are the same parameter: of the same
// place, and of the same name except in the body (whose name is only a
// label).
func sameParam(p, q apiParameter) bool { return p.In == q.In && (p.In == "body" || p.Name == q.Name) }

// schemaDisagreements compares one schema of ours with full's, and
// recurses into the fields and items ours describes.
func schemaDisagreements(at string, ours, full *apiSpec, o, f *apiSchema) []string {
	o, oerr := ours.resolve(o)
	f, ferr := full.resolve(f)
	if oerr != nil || ferr != nil {
		return []string{fmt.Sprintf("%s: %v %v", at, oerr, ferr)}
	}
	var out []string
	add := func(format string, args ...any) { out = append(out, at+": "+fmt.Sprintf(format, args...)) }
	if ot, ft := schemaType(o), schemaType(f); ot != ft {
		add("type %s, Firecracker says %s", ot, ft)
	}
	out = append(out, valueDisagreements(at, o, f)...)
	if or, fr := sortedCopy(o.Required), sortedCopy(f.Required); !slices.Equal(or, fr) {
		add("required %v, Firecracker says %v", or, fr)
	}
	if allowsMore(o) != allowsMore(f) {
		add("additional properties %v, Firecracker says %v", allowsMore(o), allowsMore(f))
	}
	for _, name := range sortedKeys(o.Properties) {
		if f.Properties[name] == nil {
			out = append(out, fmt.Sprintf("%s.%s: not in Firecracker's API", at, name))
			continue
		}
		out = append(out, schemaDisagreements(at+"."+name, ours, full, o.Properties[name], f.Properties[name])...)
	}
	for _, name := range o.Required {
		if o.Properties[name] == nil {
			add("required field %s not described", name)
		}
	}
	if o.Items != nil {
		if f.Items == nil {
			add("items, where Firecracker has none")
		} else {
			out = append(out, schemaDisagreements(at+"[]", ours, full, o.Items, f.Items)...)
		}
	}
	return out
}

// valueDisagreements compares the values a schema allows: its enum and
// its bounds.
func valueDisagreements(at string, o, f *apiSchema) []string {
	var out []string
	switch {
	case len(f.Enum) > 0 && len(o.Enum) == 0:
		out = append(out, fmt.Sprintf("%s: no enum, Firecracker has %v", at, f.Enum))
	case len(f.Enum) == 0 && len(o.Enum) > 0:
		out = append(out, fmt.Sprintf("%s: enum %v, Firecracker has none", at, o.Enum))
	}
	for _, v := range o.Enum {
		if len(f.Enum) > 0 && !slices.ContainsFunc(f.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			out = append(out, fmt.Sprintf("%s: value %q not in Firecracker's enum %v", at, fmt.Sprint(v), f.Enum))
		}
	}
	for _, b := range []struct {
		name string
		o, f *float64
	}{{"minimum", o.Minimum, f.Minimum}, {"maximum", o.Maximum, f.Maximum}} {
		if (b.o == nil) != (b.f == nil) || (b.o != nil && *b.o != *b.f) {
			out = append(out, fmt.Sprintf("%s: %s %v, Firecracker says %v", at, b.name, deref(b.o), deref(b.f)))
		}
	}
	return out
}

func schemaType(s *apiSchema) string {
	if s.Type == "" && (s.Properties != nil || s.AdditionalProperties != nil) {
		return "object"
	}
	return s.Type
}

func allowsMore(s *apiSchema) bool {
	return s.AdditionalProperties != nil && s.AdditionalProperties.allowed
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	if c == nil {
		c = []string{}
	}
	return c
}
