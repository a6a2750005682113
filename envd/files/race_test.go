//go:build race

package files

// raceEnabled shrinks the tests whose pure-Go hot loops (compress/flate)
// the race detector slows twentyfold.
const raceEnabled = true
