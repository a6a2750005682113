// Package handles keeps a runtime driver's handles on its sandboxes: the
// table of those it runs, keyed by sandbox ID, with reservations for calls
// still building a handle; and the versioned driver state a handle is
// saved as (runtime.DriverState), which the agent keeps in its own record
// of the sandbox. It also reads the state files drivers wrote themselves
// before the agent kept their state, so sandboxes of older agents are
// still recovered.
//
// It knows nothing of what a handle holds: the drivers do.
package handles
