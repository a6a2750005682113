// Package metrichistory keeps the recent resource use of the sandboxes of
// one host, in memory, bounded: what the host agent samples every few
// seconds (CPU, memory, disk, network) and serves as a sandbox's metrics.
//
// A series (one sandbox) holds a ring of fixed-size buckets per tier, the
// finest first. By default (DefaultTiers) the finest tier holds the
// sampling interval (5 s) for the last hour, the next one 1 min buckets
// for the last 6 h, the coarsest 5 min buckets for the last 24 h. Each
// sample goes into the current bucket of every tier (a roll-up on
// write): a bucket merges the samples taken in it, the CPU share as
// their mean, memory and disk as their largest, network bytes as their
// sum. A query stitches the tiers, the finest where it still covers the
// time, so the answer has no gap and no overlap, and merges its points
// further into a coarser step when asked.
//
// A bucket is 28 bytes (memory and disk in KiB, network bytes as float32
// sums, the sum of the CPU shares in hundredths of a percent, the count
// of samples), so 24 h of one sandbox at the default tiers is 1368
// buckets, about 38 KB, and a ring grows to its size only as its sandbox
// lives.
// A destroyed sandbox's series is kept, ended, for Config.EndedFor (1 h)
// and at most Config.EndedMax of them (256), the earliest ended evicted
// first, so that its metrics still answer right after it is killed.
//
// The package neither samples nor knows of sandboxes' runtimes: the agent
// reads runtime.Stats and adds samples. It keeps nothing on disk; a
// restarted agent starts with empty series.
package metrichistory
