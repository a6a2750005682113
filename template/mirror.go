package template

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"roost.dev/roost/errdefs"
)

// aptDir is where the host's apt configuration lives.
const aptDir = "/etc/apt"

// aptSource is one deb line, or one deb822 stanza, of an apt source list.
type aptSource struct {
	types, uris, suites, components []string
	signedBy                        string
	enabled                         bool
}

// debianSuites are the suite names a Debian archive serves; entries of
// other distributions (an Ubuntu mirror has no bookworm) are not mirrors
// debootstrap can build base from.
var debianSuites = []string{
	"stable", "oldstable", "oldoldstable", "testing", "unstable", "sid", "experimental",
	"stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke",
}

// Mirror is the Debian archive base is built from.
type Mirror struct {
	URL string
	// Keyring verifies the archive, when the host's source names one
	// (Signed-By); empty means debootstrap's default.
	Keyring string
	// From is the file the mirror was found in.
	From string
}

// DebianMirror finds the Debian archive this host's apt uses, in
// /etc/apt/sources.list and /etc/apt/sources.list.d/*.list and *.sources.
// It prefers an entry for bookworm, then any Debian release; security
// archives are never used. It wraps errdefs.ErrUnavailable when there is
// none.
func DebianMirror() (Mirror, error) {
	return findMirror(aptDir)
}

func findMirror(dir string) (Mirror, error) {
	files := []string{filepath.Join(dir, "sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(dir, "sources.list.d", pat))
		slices.Sort(m)
		files = append(files, m...)
	}
	best, bestScore := Mirror{}, 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822(string(data))
		} else {
			srcs = parseOneLine(string(data))
		}
		for _, src := range srcs {
			score := mirrorScore(src)
			if score <= bestScore {
				continue
			}
			for _, u := range src.uris {
				if usableURI(u) {
					best = Mirror{URL: strings.TrimSuffix(u, "/"), From: f}
					if filepath.IsAbs(src.signedBy) && !strings.Contains(src.signedBy, "\n") {
						best.Keyring = src.signedBy
					}
					bestScore = score
					break
				}
			}
		}
	}
	if bestScore == 0 {
		return Mirror{}, fmt.Errorf("no Debian mirror in %s: the base template is built from the Debian archive apt uses; add one to apt's sources: %w",
			filepath.Join(dir, "sources.list{,.d}"), errdefs.ErrUnavailable)
	}
	return best, nil
}

// mirrorScore ranks a source as a mirror for bookworm: 0 unusable, then
// better the higher.
func mirrorScore(src aptSource) int {
	if !src.enabled || !slices.Contains(src.types, "deb") || !slices.Contains(src.components, "main") {
		return 0
	}
	score := 0
	for _, s := range src.suites {
		release, pocket, _ := strings.Cut(s, "-")
		if !slices.Contains(debianSuites, release) || pocket == "security" {
			continue
		}
		switch {
		case s == "bookworm":
			score = max(score, 4)
		case pocket == "":
			score = max(score, 3)
		case release == "bookworm":
			score = max(score, 2)
		default:
			score = max(score, 1)
		}
	}
	return score
}

func usableURI(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "http", "https":
		return u.Host != ""
	case "file":
		return u.Path != ""
	}
	return false
}

// parseOneLine reads the one-line format:
// "deb [opt=value ...] uri suite [component ...]".
func parseOneLine(data string) []aptSource {
	var out []aptSource
	for line := range strings.SplitSeq(data, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		src := aptSource{types: []string{f[0]}, enabled: true}
		rest := f[1:]
		if strings.HasPrefix(rest[0], "[") {
			// Options run to the token ending in "]".
			i := 0
			for ; i < len(rest); i++ {
				opt := strings.Trim(rest[i], "[]")
				if k, v, ok := strings.Cut(opt, "="); ok && strings.EqualFold(k, "signed-by") {
					src.signedBy = v
				}
				if strings.HasSuffix(rest[i], "]") {
					break
				}
			}
			rest = rest[min(i+1, len(rest)):]
		}
		if len(rest) < 2 {
			continue
		}
		src.uris = []string{rest[0]}
		src.suites = []string{rest[1]}
		src.components = rest[2:]
		out = append(out, src)
	}
	return out
}

// parseDeb822 reads the deb822 format of *.sources files: stanzas of
// "Field: value" lines separated by blank lines, continuation lines
// starting with white space.
func parseDeb822(data string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) == 0 {
			return
		}
		src := aptSource{
			types:      strings.Fields(fields["types"]),
			uris:       strings.Fields(fields["uris"]),
			suites:     strings.Fields(fields["suites"]),
			components: strings.Fields(fields["components"]),
			signedBy:   strings.TrimSpace(fields["signed-by"]),
			enabled:    !strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no"),
		}
		out = append(out, src)
		fields, last = map[string]string{}, ""
	}
	for line := range strings.SplitSeq(data, "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}
