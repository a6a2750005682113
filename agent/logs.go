package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// Bounds of one log read. A sandbox's console grows as long as the
// sandbox lives (a VM guest's root can write to it at will), so a read
// looks only at its tail and keeps only the start of each line.
const (
	// logWindow is how many bytes from the log's end a read parses.
	logWindow = 8 << 20
	// maxLogLine is how many bytes of one line an entry keeps.
	maxLogLine = 16 << 10
	// MaxLogLimit is the most entries one read returns.
	MaxLogLimit = 10000
	// DefaultLogLimit is what a read returns at most when asked no limit.
	DefaultLogLimit = 1000
	// maxLogSearch bounds a query's search string, in bytes.
	maxLogSearch = 1024
)

// LogLevel is a log entry's severity, in order. As a filter, the zero
// value keeps every entry.
type LogLevel int

// The levels of log entries.
const (
	LogDebug LogLevel = iota + 1
	LogInfo
	LogWarn
	LogError
)

// LogEntry is one line of a sandbox's log (see parseLogLine).
type LogEntry struct {
	Time    time.Time
	Level   LogLevel
	Message string
	// Fields are a JSON line's other keys; never nil.
	Fields map[string]string
}

// LogQuery selects entries of a sandbox's log.
type LogQuery struct {
	// Cursor, unless zero, is where the read starts: forward, entries at
	// or after its millisecond; backward, at or before it.
	Cursor time.Time
	// Backward returns the newest entries first.
	Backward bool
	// Limit is the most entries returned, 0 to MaxLogLimit.
	Limit int
	// MinLevel drops entries below it.
	MinLevel LogLevel
	// Search, unless empty, keeps entries whose message contains it
	// (case-sensitive).
	Search string
}

func (q LogQuery) validate() error {
	if q.Limit < 0 || q.Limit > MaxLogLimit {
		return fmt.Errorf("log limit %d: must be 0 to %d: %w", q.Limit, MaxLogLimit, errdefs.ErrInvalid)
	}
	if len(q.Search) > maxLogSearch {
		return fmt.Errorf("log search of %d bytes: at most %d: %w", len(q.Search), maxLogSearch, errdefs.ErrInvalid)
	}
	return nil
}

// matches says whether the query selects e. Times compare in whole
// milliseconds, the unit of E2B's cursors.
func (q LogQuery) matches(e LogEntry) bool {
	if e.Level < q.MinLevel || !strings.Contains(e.Message, q.Search) {
		return false
	}
	if q.Cursor.IsZero() {
		return true
	}
	at, cursor := e.Time.UnixMilli(), q.Cursor.UnixMilli()
	if q.Backward {
		return at <= cursor
	}
	return at >= cursor
}

// Logs reads the log of sandbox id (runtime.LogFile in its state
// directory) in any state: the entries q selects, oldest first, or newest
// first when q.Backward. Only the log's last logWindow bytes are read,
// so older entries are not found. A sandbox with no log yet has no
// entries; an unknown one wraps errdefs.ErrNotFound.
func (m *Manager) Logs(id string, q LogQuery) ([]LogEntry, error) {
	if err := q.validate(); err != nil {
		return nil, err
	}
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	entries, err := readLog(filepath.Join(sb.dir, runtime.LogFile), sb.snapshot().Started, q)
	if errors.Is(err, fs.ErrNotExist) {
		return []LogEntry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: read log: %w", id, err)
	}
	return entries, nil
}

// readLog parses the tail of the log at path into the entries q selects.
// The log is a ring of two files (see runtime.LogFile): path.1, the
// older, then path. started times the plain lines read before any JSON
// line. A line still being written when the read reaches it counts as it
// is.
func readLog(path string, started time.Time, q LogQuery) ([]LogEntry, error) {
	src, size, closeLog, err := openLog(path)
	if err != nil {
		return nil, err
	}
	defer closeLog()
	// Up to the size seen now: a log written faster than it is read
	// cannot keep the read going.
	from := max(0, size-logWindow)
	r := bufio.NewReaderSize(io.NewSectionReader(src, from, size-from), maxLogLine)
	if from > 0 {
		if _, err := readLogLine(r); err != nil {
			return []LogEntry{}, ignoreEOF(err) // one line, cut by the window
		}
	}
	c := logCollector{q: q}
	prev := started
	for !c.done() {
		line, err := readLogLine(r)
		if line = bytes.TrimRight(line, "\r\n"); len(line) > 0 {
			e, timed := parseLogLine(string(line), prev)
			if timed {
				prev = e.Time
			}
			c.add(e)
		}
		if err != nil {
			return c.result(), ignoreEOF(err)
		}
	}
	return c.result(), nil
}

// openLog opens the ring of the log at path as one: path.1's bytes, then
// path's, at their sizes now. path is opened first: when the ring turns
// between the two opens, path.1 is the file already open and is left
// out, so no line is read twice.
func openLog(path string) (io.ReaderAt, int64, func(), error) {
	cur, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	curSt, err := cur.Stat()
	if err != nil {
		cur.Close()
		return nil, 0, nil, err
	}
	older, err := os.Open(path + ".1")
	if err != nil {
		return cur, curSt.Size(), func() { cur.Close() }, nil
	}
	closeBoth := func() { cur.Close(); older.Close() }
	oldSt, err := older.Stat()
	if err != nil || os.SameFile(oldSt, curSt) {
		return cur, curSt.Size(), closeBoth, nil
	}
	return joinedLog{older, oldSt.Size(), cur}, oldSt.Size() + curSt.Size(), closeBoth, nil
}

// joinedLog reads a then b as one, a being n bytes long.
type joinedLog struct {
	a io.ReaderAt
	n int64
	b io.ReaderAt
}

func (j joinedLog) ReadAt(p []byte, off int64) (int, error) {
	if off >= j.n {
		return j.b.ReadAt(p, off-j.n)
	}
	k, err := j.a.ReadAt(p[:min(int64(len(p)), j.n-off)], off)
	if k < len(p) && (err == nil || errors.Is(err, io.EOF)) {
		if int64(k) < j.n-off {
			return k, err // a shrank: a rotation truncated what was read
		}
		m, err := j.b.ReadAt(p[k:], 0)
		return k + m, err
	}
	return k, err
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// readLogLine reads one line, newline included, keeping at most the
// reader's buffer size of it and skipping the rest. The line is valid
// until the next read.
func readLogLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	kept := bytes.Clone(line)
	for errors.Is(err, bufio.ErrBufferFull) {
		_, err = r.ReadSlice('\n')
	}
	return kept, err
}

// logCollector keeps what a query selects from entries seen oldest first:
// forward, the first q.Limit; backward, the last q.Limit, in a ring, so
// that memory stays bounded whatever the log holds.
type logCollector struct {
	q    LogQuery
	kept []LogEntry
	next int // backward, once kept is full: the oldest entry, replaced next
}

// done says whether later entries can no longer change the result.
func (c *logCollector) done() bool {
	return c.q.Limit == 0 || (!c.q.Backward && len(c.kept) == c.q.Limit)
}

func (c *logCollector) add(e LogEntry) {
	if c.done() || !c.q.matches(e) {
		return
	}
	if len(c.kept) < c.q.Limit {
		c.kept = append(c.kept, e)
		return
	}
	c.kept[c.next] = e
	c.next = (c.next + 1) % len(c.kept)
}

// result is the selected entries in the query's direction.
func (c *logCollector) result() []LogEntry {
	out := make([]LogEntry, 0, len(c.kept))
	out = append(append(out, c.kept[c.next:]...), c.kept[:c.next]...)
	if c.q.Backward {
		slices.Reverse(out)
	}
	return out
}
