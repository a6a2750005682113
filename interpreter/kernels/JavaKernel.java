// The Java kernel's driver (see repl.go), run by the JDK's source
// launcher: `java JavaKernel.java`. It reads requests from fd 3, a line
// each: the file holding the code to run, then the run's sync mark (and
// "silent" for the server's own runs, which it runs alike). Code
// runs in JShell (the JDK's jdk.jshell), in this JVM, so what it declares
// lasts from run to run; the value of its last expression is the run's
// main result. An interrupt (SIGINT) stops the code. After a run the
// driver writes the mark to stdout and stderr, then what the run gave to
// fd 4: result and error lines, and done.

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Collectors;

import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.SourceCodeAnalysis.Completeness;

public class JavaKernel {
    private static PrintStream results;

    public static void main(String[] args) throws Exception {
        results = new PrintStream(new FileOutputStream("/proc/self/fd/4"), true, StandardCharsets.UTF_8);
        var requests = new BufferedReader(new InputStreamReader(new FileInputStream("/proc/self/fd/3"), StandardCharsets.UTF_8));
        var shell = JShell.builder().executionEngine("local").out(System.out).err(System.err).build();
        sun.misc.Signal.handle(new sun.misc.Signal("INT"), signal -> shell.stop());
        String line;
        while ((line = requests.readLine()) != null) {
            String[] request = line.split(" ", 3); // file, mark, and "silent" (run alike)
            run(shell, Files.readString(Path.of(request[0])));
            System.out.flush();
            System.out.print(request[1]);
            System.out.flush();
            System.err.flush();
            System.err.print(request[1]);
            System.err.flush();
            results.println("{\"type\":\"done\"}");
        }
        System.exit(0);
    }

    // run evaluates code a snippet at a time, until one fails; the value
    // of the last, when it is an expression or a variable, is the result.
    static void run(JShell shell, String code) {
        SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
        String rest = code;
        String value = null;
        while (!rest.isBlank()) {
            SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(rest);
            if (info.completeness() == Completeness.DEFINITELY_INCOMPLETE || info.completeness() == Completeness.CONSIDERED_INCOMPLETE) {
                error("CompilationError", "incomplete code: " + rest.strip(), rest.strip());
                return;
            }
            rest = info.remaining();
            value = null;
            for (SnippetEvent event : shell.eval(info.source())) {
                if (event.causeSnippet() != null) {
                    continue; // what the snippet changed in earlier ones
                }
                if (event.exception() != null) {
                    thrown(event.exception());
                    return;
                }
                if (event.status() == Snippet.Status.REJECTED) {
                    String why = shell.diagnostics(event.snippet()).map(d -> d.getMessage(null)).collect(Collectors.joining("\n"));
                    error("CompilationError", why, info.source().strip() + "\n" + why);
                    return;
                }
                Snippet.Kind kind = event.snippet().kind();
                if (kind == Snippet.Kind.EXPRESSION || kind == Snippet.Kind.VAR) {
                    value = event.value();
                }
            }
        }
        if (value != null) {
            results.println("{\"type\":\"result\",\"data\":{\"text/plain\":" + json(value) + "}}");
        }
    }

    static void thrown(Exception e) {
        String name = e instanceof EvalException ee ? ee.getExceptionClassName() : e.getClass().getName();
        var trace = new StringBuilder(name + ": " + e.getMessage());
        for (StackTraceElement frame : e.getStackTrace()) {
            trace.append("\n\tat ").append(frame);
        }
        error(name, String.valueOf(e.getMessage()), trace.toString());
    }

    static void error(String name, String value, String traceback) {
        results.println("{\"type\":\"error\",\"name\":" + json(name) + ",\"value\":" + json(value) + ",\"traceback\":" + json(traceback) + "}");
    }

    static String json(String s) {
        var b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
