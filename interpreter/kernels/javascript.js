// The JavaScript and TypeScript kernels' driver (see repl.go), run by
// Node.js: `node javascript.js [typescript]`. It reads requests from fd 3,
// a line each: the file holding the code to run, then the run's sync
// mark (and "silent" for the server's own runs, which it runs alike).
// Code runs in this process's global scope, so what it declares lasts
// from run to run; the value of its last expression is the run's
// main result. Code with a top-level await (or an import) is rewritten
// into an async function whose declarations are hoisted to the global
// scope, as Node's REPL does. TypeScript is transpiled first (Debian's
// node-typescript; types are not checked). After a run the driver writes
// the mark to stdout and stderr, then what the run gave to fd 4: result
// and error lines, and done.
"use strict";
const fs = require("fs");
const net = require("net");
const path = require("path");
const readline = require("readline");
const url = require("url");
const util = require("util");
const vm = require("vm");
const { createRequire, isBuiltin } = require("module");

const typescript = process.argv[2] === "typescript";
// Debian installs its Node.js modules here; a Node.js from elsewhere does
// not look there on its own.
const debianModules = ["/usr/share/nodejs", "/usr/lib/nodejs"];

function debianModule(name) {
  try {
    return require(name);
  } catch (err) {
    const dir = debianModules.find((d) => fs.existsSync(path.join(d, name)));
    if (dir === undefined) throw err;
    return require(path.join(dir, name));
  }
}

function send(line) {
  fs.writeSync(4, JSON.stringify(line) + "\n");
}

// What user code sees as require, and what its imports resolve against:
// its working directory.
const cwdRequire = createRequire(path.join(process.cwd(), "[repl]"));
globalThis.require = cwdRequire;

// importModule is import() for user code: a package is found from the
// working directory, as require finds it.
function importModule(specifier) {
  if (isBuiltin(specifier) || /^[a-z]+:/.test(specifier)) return import(specifier);
  let resolved;
  try {
    resolved = cwdRequire.resolve(specifier);
  } catch {
    return import(specifier);
  }
  return import(url.pathToFileURL(resolved).href);
}
globalThis.__roost_import = importModule;

const parseOptions = {
  ecmaVersion: "latest",
  sourceType: "script",
  allowAwaitOutsideFunction: true,
  allowImportExportEverywhere: true,
};

// dynamicImports has code's import() calls call importModule: a script
// run by the vm module has no import() of its own without an
// experimental flag.
function dynamicImports(code) {
  if (!code.includes("import")) return code;
  let ast;
  try {
    ast = debianModule("acorn").parse(code, parseOptions);
  } catch {
    return code;
  }
  const starts = [];
  debianModule("acorn-walk").full(ast, (n) => {
    if (n.type === "ImportExpression") starts.push(n.start);
  });
  for (const s of starts.sort((a, b) => b - a)) {
    code = code.slice(0, s) + "__roost_import" + code.slice(s + "import".length);
  }
  return code;
}

function transpile(code) {
  const ts = debianModule("typescript");
  const out = ts.transpileModule(code, {
    reportDiagnostics: true,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, alwaysStrict: false },
  });
  const errors = (out.diagnostics || []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) {
    throw new SyntaxError(errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("\n"));
  }
  return out.outputText;
}

// names lists the identifiers a declaration's pattern binds.
function names(pattern, into) {
  switch (pattern.type) {
    case "Identifier":
      into.push(pattern.name);
      break;
    case "ObjectPattern":
      for (const p of pattern.properties) names(p.type === "RestElement" ? p.argument : p.value, into);
      break;
    case "ArrayPattern":
      for (const e of pattern.elements) if (e) names(e, into);
      break;
    case "AssignmentPattern":
      names(pattern.left, into);
      break;
    case "RestElement":
      names(pattern.argument, into);
      break;
  }
  return into;
}

// statement is the body statement st of code rewritten for an async
// function, the names it declares pushed to hoist (by kind: var or let).
function statement(code, st, hoist) {
  const src = (n) => code.slice(n.start, n.end);
  switch (st.type) {
    case "VariableDeclaration": {
      const kind = st.kind === "var" ? "var" : "let";
      const sets = [];
      for (const d of st.declarations) {
        hoist[kind].push(...names(d.id, []));
        if (d.init) sets.push(`(${src(d.id)} = ${src(d.init)})`);
      }
      return sets.length ? `void (${sets.join(", ")});` : "";
    }
    case "FunctionDeclaration":
      hoist.var.push(st.id.name);
      return `${st.id.name} = ${src(st)};`;
    case "ClassDeclaration":
      hoist.let.push(st.id.name);
      return `${st.id.name} = ${src(st)};`;
    case "ImportDeclaration": {
      const from = `await import(${src(st.source)})`; // importModule, by scriptOptions
      if (st.specifiers.length === 0) return `${from};`;
      const props = [];
      let whole = null;
      for (const s of st.specifiers) {
        hoist.let.push(s.local.name);
        if (s.type === "ImportNamespaceSpecifier") whole = s.local.name;
        else if (s.type === "ImportDefaultSpecifier") props.push(`default: ${s.local.name}`);
        else props.push(`${src(s.imported)}: ${s.local.name}`);
      }
      if (whole) return `${whole} = ${from};`;
      return `void ({${props.join(", ")}} = ${from});`;
    }
  }
  return src(st);
}

// asyncWrap rewrites code that awaits (or imports) at its top level into
// a script that runs it in an async function and resolves to
// {value} of its last expression, or to undefined; or null when code is
// not such code.
function asyncWrap(code) {
  const acorn = debianModule("acorn");
  let ast;
  try {
    ast = acorn.parse(code, parseOptions);
  } catch {
    return null;
  }
  const hoist = { var: [], let: [] };
  const body = ast.body.map((st, i) => {
    if (i === ast.body.length - 1 && st.type === "ExpressionStatement") {
      return `return {value: (${code.slice(st.expression.start, st.expression.end)})};`;
    }
    return statement(code, st, hoist);
  });
  let head = "";
  if (hoist.var.length) head += `var ${hoist.var.join(", ")};\n`;
  if (hoist.let.length) head += `let ${hoist.let.join(", ")};\n`;
  return `${head}(async () => {\n${body.join("\n")}\n})()`;
}

// evaluate runs code and resolves to {value} of its last expression, or
// to undefined when it has none.
async function evaluate(code) {
  if (typescript) code = transpile(code);
  let script;
  try {
    script = new vm.Script(dynamicImports(code), { filename: "<cell>" });
  } catch (err) {
    const wrapped = err instanceof SyntaxError ? asyncWrap(code) : null;
    if (wrapped === null) throw err;
    return await new vm.Script(dynamicImports(wrapped), { filename: "<cell>" }).runInThisContext({ breakOnSigint: true });
  }
  const value = script.runInThisContext({ breakOnSigint: true });
  return value === undefined ? undefined : { value };
}

// interrupted rejects when SIGINT comes while a run awaits.
let onInterrupt = null;
process.on("SIGINT", () => {
  if (onInterrupt) onInterrupt();
});

function interrupted() {
  return new Promise((_, reject) => {
    onInterrupt = () => reject(Object.assign(new Error("Execution interrupted"), { name: "KeyboardInterrupt" }));
  });
}

// userStack is err's stack without the frames of this driver and of
// Node.js's vm module below the code's own.
function userStack(err) {
  if (!err.stack) return `${err.name}: ${err.message}`;
  return err.stack
    .split("\n")
    .filter((l) => !(/^\s+at /.test(l) && (l.includes(__filename) || l.includes("node:vm") || l.includes("node:internal"))))
    .join("\n");
}

function errorLine(err) {
  if (err instanceof Error) {
    return { type: "error", name: err.name, value: err.message, traceback: userStack(err) };
  }
  return { type: "error", name: "Error", value: String(err), traceback: `Uncaught ${util.inspect(err)}` };
}

// text is a value as the result's text: a string as itself (in quotes
// that the server takes off, as it does Python's), else as Node.js's REPL
// shows it.
function text(value) {
  return typeof value === "string" ? `'${value}'` : util.inspect(value);
}

async function run(file) {
  try {
    const out = await Promise.race([evaluate(fs.readFileSync(file, "utf8")), interrupted()]);
    if (out !== undefined && out.value !== undefined) {
      send({ type: "result", data: { "text/plain": text(out.value) } });
    }
  } catch (err) {
    send(errorLine(err));
  } finally {
    onInterrupt = null;
  }
}

// What code leaves running may fail later: it is told on stderr, and the
// kernel lives on.
process.on("unhandledRejection", (err) => process.stderr.write(`Unhandled rejection: ${util.inspect(err)}\n`));
process.on("uncaughtException", (err) => process.stderr.write(`Uncaught exception: ${util.inspect(err)}\n`));

async function main() {
  // A socket, not a file stream: a file stream's read waits in a thread
  // that process.exit would wait for.
  const lines = readline.createInterface({ input: new net.Socket({ fd: 3, readable: true, writable: false }), crlfDelay: Infinity });
  for await (const line of lines) {
    const [file, mark] = line.split(" ");
    await run(file);
    fs.writeSync(1, mark);
    fs.writeSync(2, mark);
    send({ type: "done" });
  }
  process.exit(0);
}

main();
