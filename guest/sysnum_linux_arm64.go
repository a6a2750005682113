package guest

// sysFinitModule is finit_module(2)'s number, missing from package syscall.
const sysFinitModule = 273
