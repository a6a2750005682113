// Command attacktable turns `go test -json` output of the attack suite
// (tests named TestAttack*) into the Markdown table of docs/security.md:
// one row per attack with the package, its description (the first
// sentence of the test's doc comment) and the result. It exits 1 when an
// attack got through (a test failed), a package failed to build or
// failed outside its tests, or no attack ran at all.
//
//	go test -json -run '^TestAttack' ./... | go run ./test/attacktable
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// event is one line of `go test -json`.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// row is one attack's outcome.
type row struct {
	pkg, test, result, skipReason string
	output                        []string
}

func main() {
	rows, err := read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attacktable:", err)
		os.Exit(2)
	}
	docs := describe(rows)
	failed := render(os.Stdout, rows, docs)
	for _, r := range rows {
		if r.result == "fail" || r.result == "" {
			fmt.Fprintf(os.Stderr, "\n%s (%s):\n%s", r.test, r.pkg, tail(r.output, 60))
		}
	}
	switch {
	case len(rows) == 0:
		fmt.Fprintln(os.Stderr, "attacktable: no attack test ran")
		os.Exit(1)
	case failed > 0:
		fmt.Fprintf(os.Stderr, "attacktable: %d attack(s) got through or failed to run\n", failed)
		os.Exit(1)
	}
}

// read collects the final result of every top-level TestAttack* test, and
// the reason a skipped one gave.
func read(r io.Reader) ([]row, error) {
	byKey := map[string]*row{}
	var order, pkgFailed []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// go test prints build failures as plain text.
			fmt.Fprintln(os.Stderr, sc.Text())
			continue
		}
		if ev.Test == "" && ev.Action == "fail" {
			// A package that failed to build, or failed outside any test.
			pkgFailed = append(pkgFailed, ev.Package)
			continue
		}
		if !strings.HasPrefix(ev.Test, "TestAttack") || strings.Contains(ev.Test, "/") {
			continue
		}
		key := ev.Package + "." + ev.Test
		rw := byKey[key]
		if rw == nil {
			rw = &row{pkg: ev.Package, test: ev.Test}
			byKey[key] = rw
			order = append(order, key)
		}
		switch ev.Action {
		case "pass", "fail", "skip":
			rw.result = ev.Action
		case "output":
			rw.output = append(rw.output, ev.Output)
			if i := strings.Index(ev.Output, ": "); i >= 0 && strings.Contains(ev.Output[:i], "_test.go:") && rw.skipReason == "" {
				rw.skipReason = strings.TrimSpace(ev.Output[i+2:])
			}
		}
	}
	rows := make([]row, 0, len(order))
	for _, k := range order {
		rows = append(rows, *byKey[k])
	}
	for _, p := range pkgFailed {
		if !hasFailure(rows, p) {
			rows = append(rows, row{pkg: p, test: "TestAttack(package failed)", result: "fail"})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].pkg < rows[j].pkg })
	return rows, sc.Err()
}

func hasFailure(rows []row, pkg string) bool {
	for _, r := range rows {
		if r.pkg == pkg && r.result == "fail" {
			return true
		}
	}
	return false
}

// describe reads each attack test's doc comment from its package's source.
func describe(rows []row) map[string]string {
	docs := map[string]string{}
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.pkg] {
			continue
		}
		seen[r.pkg] = true
		out, err := exec.Command("go", "list", "-f", "{{.Dir}}", r.pkg).Output()
		if err != nil {
			continue
		}
		dir := strings.TrimSpace(string(out))
		files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		fset := token.NewFileSet()
		for _, f := range files {
			file, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
			if err != nil {
				continue
			}
			for _, d := range file.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Doc == nil || !strings.HasPrefix(fn.Name.Name, "TestAttack") {
					continue
				}
				docs[r.pkg+"."+fn.Name.Name] = summary(fn.Doc.Text(), fn.Name.Name)
			}
		}
	}
	return docs
}

// tail is the last n lines of a test's output, where its failures are.
func tail(lines []string, n int) string {
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// summary is a doc comment without the leading "TestAttackX:" and joined
// onto one line.
func summary(doc, name string) string {
	doc = strings.Join(strings.Fields(doc), " ")
	doc = strings.TrimPrefix(doc, name)
	doc = strings.TrimLeft(doc, ": ")
	return strings.ReplaceAll(doc, "|", `\|`)
}

// render writes the table and returns how many attacks failed.
func render(w io.Writer, rows []row, docs map[string]string) int {
	failed := 0
	fmt.Fprintln(w, "| attack | package | what it tries, and what stops it | result |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rows {
		result := "stopped"
		switch r.result {
		case "fail", "":
			result = "**GOT THROUGH or broke the sandbox**"
			failed++
		case "skip":
			result = "skipped: " + r.skipReason
		}
		pkg := strings.TrimPrefix(r.pkg, "roost.dev/roost/")
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", strings.TrimPrefix(r.test, "TestAttack"), pkg, docs[r.pkg+"."+r.test], result)
	}
	return failed
}
