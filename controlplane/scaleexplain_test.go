package controlplane_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// statementLog keeps each distinct statement the store sent while on,
// with the arguments of its first sending (store.WithStatements).
type statementLog struct {
	on   atomic.Bool
	mu   sync.Mutex
	seen map[string][]any
}

func (l *statementLog) sent(query string, args []any) {
	if !l.on.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[query]; !ok {
		l.seen[query] = args
	}
}

// bigTables are the tables that grow with the cluster: a statement that
// reads or changes them must find its rows through an index.
var bigTables = []string{"sandboxes", "sandbox_metadata", "events", "webhook_deliveries", "audit_log"}

// seqScanOn finds the sequential scans in a plan's text.
var seqScanOn = regexp.MustCompile(`Seq Scan on (\w+)`)

// explainAll EXPLAINs every statement l kept that reads or changes a
// table, with its first arguments, on PostgreSQL's generic plan (as a
// prepared statement's, whatever the values) and with sequential scans
// priced out, so a plan still scanning a table has no index to use. It
// returns how many statements it explained and those that scan a big
// table, each with its plan.
func explainAll(b *testing.B, db *sql.DB, l *statementLog) (explained int, scanning []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, set := range []string{"SET enable_seqscan = off", "SET plan_cache_mode = force_generic_plan"} {
		if _, err := conn.ExecContext(ctx, set); err != nil {
			b.Fatal(err)
		}
	}
	l.mu.Lock()
	queries := make([]string, 0, len(l.seen))
	for q := range l.seen {
		queries = append(queries, q)
	}
	l.mu.Unlock()
	slices.Sort(queries)
	for i, q := range queries {
		if !explainable(q) {
			continue
		}
		plan, err := explain(ctx, conn, fmt.Sprintf("s%d", i), q, l.seen[q])
		if err != nil {
			b.Errorf("EXPLAIN %s: %v", q, err)
			continue
		}
		explained++
		for _, m := range seqScanOn.FindAllStringSubmatch(plan, -1) {
			if slices.Contains(bigTables, m[1]) {
				scanning = append(scanning, q+"\n"+plan)
				break
			}
		}
	}
	return explained, scanning
}

// explainable: a statement with a plan (not a transaction's begin or end,
// a lock, a SET or a notice).
func explainable(q string) bool {
	word, _, _ := strings.Cut(strings.TrimSpace(q), " ")
	switch strings.ToUpper(word) {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "WITH":
		return !strings.Contains(q, "pg_notify") && !strings.Contains(q, "pg_try_advisory") && !strings.Contains(q, "clock_timestamp")
	}
	return false
}

// explain prepares q as name and EXPLAINs its execution with args.
func explain(ctx context.Context, conn *sql.Conn, name, q string, args []any) (string, error) {
	if _, err := conn.ExecContext(ctx, "PREPARE "+name+" AS "+q); err != nil {
		return "", err
	}
	defer conn.ExecContext(ctx, "DEALLOCATE "+name)
	lits := make([]string, len(args))
	for i, a := range args {
		lits[i] = literal(a)
	}
	call := "EXPLAIN EXECUTE " + name
	if len(lits) > 0 {
		call += "(" + strings.Join(lits, ", ") + ")"
	}
	rows, err := conn.QueryContext(ctx, call)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		plan.WriteString(line + "\n")
	}
	return plan.String(), rows.Err()
}

// literal is v as an SQL literal, for EXECUTE's arguments.
func literal(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case []byte:
		return `'\x` + hex.EncodeToString(v) + `'`
	case bool:
		return strconv.FormatBool(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case time.Time:
		return "'" + v.Format(time.RFC3339Nano) + "'"
	}
	return "'" + strings.ReplaceAll(fmt.Sprint(v), "'", "''") + "'"
}
