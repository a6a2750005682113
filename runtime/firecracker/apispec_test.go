package firecracker

// A validator for requests to the Firecracker API, driven by a swagger 2.0
// description of it: Firecracker's own where it is here, and always ours
// (testdata/firecracker-api-facts.yaml, which TestAPIFactsAgreeWithSpec holds
// to Firecracker's). Tests run every request the driver sends through it, so
// a field renamed or retyped upstream fails here instead of at VM start.
//
// It is stricter than swagger in one way, on purpose: an object schema without
// additionalProperties rejects fields it does not define, because Firecracker
// deserialises its bodies with serde's deny_unknown_fields.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The API descriptions the contract checks read. Firecracker's own is at
// fullAPISpecFile: $ROOST_FIRECRACKER_API_SPEC, else the shared checkout
// beside the repository (relative to this package's directory). Ours,
// factsAPISpecFile, is in the repository: the paths, methods and request
// fields the driver uses, so the checks run on any checkout.
const factsAPISpecFile = "testdata/firecracker-api-facts.yaml"

func fullAPISpecFile() string {
	if p := os.Getenv("ROOST_FIRECRACKER_API_SPEC"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../../shared/firecracker/firecracker-api.yaml")
	return p
}

type apiSpec struct {
	Paths       map[string]map[string]*apiOperation `yaml:"paths"` // template → lowercase method
	Definitions map[string]*apiSchema               `yaml:"definitions"`
}

type apiOperation struct {
	Parameters []apiParameter `yaml:"parameters"`
}

type apiParameter struct {
	Name     string     `yaml:"name"`
	In       string     `yaml:"in"` // path, query, body
	Required bool       `yaml:"required"`
	Type     string     `yaml:"type"`
	Schema   *apiSchema `yaml:"schema"`
}

type apiSchema struct {
	Ref                  string                `yaml:"$ref"`
	Type                 string                `yaml:"type"`
	Properties           map[string]*apiSchema `yaml:"properties"`
	Required             []string              `yaml:"required"`
	Items                *apiSchema            `yaml:"items"`
	Enum                 []any                 `yaml:"enum"`
	Minimum              *float64              `yaml:"minimum"`
	Maximum              *float64              `yaml:"maximum"`
	AdditionalProperties *apiAdditional        `yaml:"additionalProperties"`
	// Composition is not used by the spec today and not implemented here;
	// parsing refuses a spec that starts using it rather than passing blindly.
	AllOf []any `yaml:"allOf"`
	AnyOf []any `yaml:"anyOf"`
	OneOf []any `yaml:"oneOf"`
}

// apiAdditional is additionalProperties: either a boolean or a schema that
// every extra value must satisfy (e.g. Metrics.properties: map of strings).
type apiAdditional struct {
	allowed bool
	schema  *apiSchema // nil: any value
}

func (a *apiAdditional) UnmarshalYAML(n *yaml.Node) error {
	if err := n.Decode(&a.allowed); err == nil {
		return nil
	}
	a.allowed, a.schema = true, new(apiSchema)
	return n.Decode(a.schema)
}

var (
	apiSpecsOnce              sync.Once
	fullSpec, factsSpec       *apiSpec
	fullSpecErr, factsSpecErr error
)

// parseAPISpecs parses both descriptions, once per test binary.
func parseAPISpecs() {
	apiSpecsOnce.Do(func() {
		fullSpec, fullSpecErr = parseAPISpec(fullAPISpecFile())
		factsSpec, factsSpecErr = parseAPISpec(factsAPISpecFile)
	})
}

// loadAPISpec returns Firecracker's description where it is here, else
// ours, and says which. A description that does not parse fails the test.
func loadAPISpec(t testing.TB) (spec *apiSpec, full bool) {
	t.Helper()
	parseAPISpecs()
	switch {
	case factsSpecErr != nil:
		t.Fatalf("firecracker API facts: %v", factsSpecErr)
	case fullSpecErr == nil:
		return fullSpec, true
	case !errors.Is(fullSpecErr, fs.ErrNotExist):
		t.Fatalf("firecracker API spec: %v", fullSpecErr)
	}
	return factsSpec, false
}

// apiSpecFiles are the descriptions, as absolute paths, that every request
// the driver sends must pass: ours, and Firecracker's where it is here.
func apiSpecFiles(t testing.TB) []string {
	t.Helper()
	if _, full := loadAPISpec(t); !full {
		t.Logf("Firecracker's API description is not here (%v): requests are checked against %s only", fullSpecErr, factsAPISpecFile)
	}
	facts, err := filepath.Abs(factsAPISpecFile)
	if err != nil {
		t.Fatal(err)
	}
	if fullSpecErr != nil {
		return []string{facts}
	}
	return []string{facts, fullAPISpecFile()}
}

func parseAPISpec(path string) (*apiSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	var s apiSpec
	if err := yaml.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(s.Paths) == 0 || len(s.Definitions) == 0 {
		return nil, fmt.Errorf("parse %s: no paths or definitions", path)
	}
	for name, d := range s.Definitions {
		if err := s.lint(d); err != nil {
			return nil, fmt.Errorf("parse %s: definitions.%s: %w", path, name, err)
		}
	}
	for tmpl, ops := range s.Paths {
		for method, op := range ops {
			for _, p := range op.Parameters {
				if p.Name == "" || p.In == "" || (p.In == "body") != (p.Schema != nil) {
					return nil, fmt.Errorf("parse %s: %s %s: unsupported parameter %+v", path, method, tmpl, p)
				}
				if err := s.lint(p.Schema); err != nil {
					return nil, fmt.Errorf("parse %s: %s %s: %w", path, method, tmpl, err)
				}
			}
		}
	}
	return &s, nil
}

// lint rejects what the validator would otherwise silently ignore.
func (s *apiSpec) lint(sc *apiSchema) error {
	if sc == nil {
		return nil
	}
	if sc.Ref != "" {
		_, err := s.resolve(sc)
		return err
	}
	if len(sc.AllOf)+len(sc.AnyOf)+len(sc.OneOf) > 0 {
		return errors.New("allOf/anyOf/oneOf not supported by the validator")
	}
	for _, p := range sc.Properties {
		if err := s.lint(p); err != nil {
			return err
		}
	}
	if sc.AdditionalProperties != nil {
		if err := s.lint(sc.AdditionalProperties.schema); err != nil {
			return err
		}
	}
	return s.lint(sc.Items)
}

// resolve follows $ref; in swagger 2.0 a $ref's siblings (description) are ignored.
func (s *apiSpec) resolve(sc *apiSchema) (*apiSchema, error) {
	for seen := 0; sc.Ref != ""; seen++ {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok || s.Definitions[name] == nil || seen > len(s.Definitions) {
			return nil, fmt.Errorf("unresolvable $ref %q", sc.Ref)
		}
		sc = s.Definitions[name]
	}
	return sc, nil
}

// check validates one request as the Firecracker API server would see it.
// path may carry a query string; body nil or blank means no body.
func (s *apiSpec) check(method, path string, body []byte) error {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	tmpl, params, ok := s.match(rawPath)
	if !ok {
		return fmt.Errorf("%s %s: no such path in the API spec", method, rawPath)
	}
	op := s.Paths[tmpl][strings.ToLower(method)]
	if op == nil {
		have := make([]string, 0, len(s.Paths[tmpl]))
		for m := range s.Paths[tmpl] {
			have = append(have, strings.ToUpper(m))
		}
		sort.Strings(have)
		return fmt.Errorf("%s %s: method not allowed (spec has %s)", method, tmpl, strings.Join(have, ", "))
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s %s: %s", method, tmpl, fmt.Sprintf(format, args...))
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	var bodyParam *apiParameter
	for i, p := range op.Parameters {
		switch p.In {
		case "body":
			bodyParam = &op.Parameters[i]
		case "query":
			if p.Required && !query.Has(p.Name) {
				return fail("query.%s: required parameter missing", p.Name)
			}
			delete(query, p.Name)
		}
	}
	for name := range query {
		return fail("query.%s: unknown query parameter", name)
	}

	if len(bytes.TrimSpace(body)) == 0 {
		if bodyParam != nil && bodyParam.Required {
			return fail("body: required but missing")
		}
		return nil
	}
	if bodyParam == nil {
		return fail("body: operation takes no body, got %d bytes", len(body))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fail("body: invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("body: invalid JSON: trailing data after the value")
	}
	if err := s.checkValue("body", bodyParam.Schema, v); err != nil {
		return fail("%v", err)
	}
	// Firecracker refuses a body whose ID disagrees with the path's.
	if obj, ok := v.(map[string]any); ok {
		for name, want := range params {
			if got, ok := obj[name]; ok && got != want {
				return fail("body.%s: %v does not match path %s %q", name, got, name, want)
			}
		}
	}
	return nil
}

// match finds the template for a concrete path. A {param} matches exactly one
// non-empty segment; when several templates match, the most literal one wins.
func (s *apiSpec) match(path string) (tmpl string, params map[string]string, ok bool) {
	segs := strings.Split(path, "/")
	best := -1
	for t := range s.Paths {
		tsegs := strings.Split(t, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		literal, p := 0, map[string]string{}
		for i, ts := range tsegs {
			if name, isParam := strings.CutPrefix(ts, "{"); isParam && strings.HasSuffix(ts, "}") && segs[i] != "" {
				p[strings.TrimSuffix(name, "}")] = segs[i]
			} else if ts == segs[i] {
				literal++
			} else {
				literal = -1
				break
			}
		}
		if literal > best || (literal == best && t < tmpl) {
			best, tmpl, params = literal, t, p
		}
	}
	return tmpl, params, best >= 0
}

// checkValue validates a decoded JSON value (numbers as json.Number) at the
// given location against a schema.
func (s *apiSpec) checkValue(at string, sc *apiSchema, v any) error {
	sc, err := s.resolve(sc)
	if err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	if typ != "" && !hasJSONType(v, typ) {
		return fmt.Errorf("%s: want %s, got %s", at, typ, jsonType(v))
	}
	if len(sc.Enum) > 0 && !slices.ContainsFunc(sc.Enum, func(e any) bool { return enumEqual(e, v) }) {
		return fmt.Errorf("%s: %s not in enum %v", at, jsonText(v), sc.Enum)
	}
	if n, ok := v.(json.Number); ok {
		x, ok := new(big.Rat).SetString(n.String())
		if !ok {
			return fmt.Errorf("%s: number %s out of range", at, n)
		}
		if sc.Minimum != nil && x.Cmp(new(big.Rat).SetFloat64(*sc.Minimum)) < 0 {
			return fmt.Errorf("%s: %s below minimum %v", at, n, *sc.Minimum)
		}
		if sc.Maximum != nil && x.Cmp(new(big.Rat).SetFloat64(*sc.Maximum)) > 0 {
			return fmt.Errorf("%s: %s above maximum %v", at, n, *sc.Maximum)
		}
	}
	switch v := v.(type) {
	case []any:
		if sc.Items == nil {
			return nil
		}
		for i, item := range v {
			if err := s.checkValue(fmt.Sprintf("%s[%d]", at, i), sc.Items, item); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, name := range sc.Required {
			if _, ok := v[name]; !ok {
				return fmt.Errorf("%s.%s: required field missing", at, name)
			}
		}
		names := make([]string, 0, len(v))
		for name := range v {
			names = append(names, name)
		}
		sort.Strings(names) // deterministic first error
		for _, name := range names {
			prop, extra := sc.Properties[name], sc.AdditionalProperties
			switch {
			case prop != nil:
				err = s.checkValue(at+"."+name, prop, v[name])
			case extra != nil && extra.allowed && extra.schema != nil:
				err = s.checkValue(at+"."+name, extra.schema, v[name])
			case extra != nil && extra.allowed:
				err = nil // free-form object
			default:
				err = fmt.Errorf("%s.%s: unknown field", at, name)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func hasJSONType(v any, typ string) bool {
	switch typ {
	case "integer":
		n, ok := v.(json.Number)
		// serde refuses 1.0 and 1e3 for integer fields: only plain digits count.
		return ok && !strings.ContainsAny(n.String(), ".eE")
	case "number":
		_, ok := v.(json.Number)
		return ok
	}
	return jsonType(v) == typ
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if strings.ContainsAny(v.String(), ".eE") {
			return "number"
		}
		return "integer"
	}
	return fmt.Sprintf("%T", v)
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// enumEqual compares a YAML enum member with a JSON value; the type has been
// checked already, so comparing text is enough for strings, numbers and booleans.
func enumEqual(e, v any) bool {
	if s, ok := v.(string); ok {
		es, ok := e.(string)
		return ok && es == s
	}
	return fmt.Sprint(e) == fmt.Sprint(v)
}
