# The bash kernel's driver (see repl.go): it reads requests from fd 3, a
# line each: the file holding the code to run, then the run's sync mark
# (and "silent" for the server's own runs, which bash runs alike).
# The code runs in this shell, so its variables, functions and working
# directory last from run to run; an interrupt (SIGINT) ends the code
# and the shell goes on. After a run the driver writes the mark to
# stdout and stderr, then the code's exit status to fd 4.
trap 'return 130 2>/dev/null' INT
while :; do
	# A read that a late interrupt broke is read again; the end of fd 3
	# ends the kernel.
	IFS=' ' read -r -u 3 __roost_file __roost_mark __roost_silent || { (($? > 128)) && continue; exit 0; }
	source "$__roost_file" </dev/null
	__roost_status=$?
	trap 'return 130 2>/dev/null' INT
	printf '%s' "$__roost_mark"
	printf '%s' "$__roost_mark" >&2
	printf '{"type":"done","status":%d}\n' "$__roost_status" >&4
done
