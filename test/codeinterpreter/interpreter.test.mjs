// E2B's @e2b/code-interpreter, unmodified, against roost-interpreter on
// localhost:49999 (the package's debug mode: no API, the server at
// localhost). run.sh starts the server.
import { Sandbox } from '@e2b/code-interpreter'
import { defineTests } from './cases.mjs'

defineTests(await Sandbox.create({ debug: true }))
