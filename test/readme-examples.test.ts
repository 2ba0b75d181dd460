// Every JavaScript/TypeScript example of the documentation is executed here,
// so that an example cannot silently rot: README.md and every page under
// docs/ (docs/**/*.md, except the generated API reference in docs/api/, which
// `npm run docs` writes and git ignores). The same files' relative links, and
// those of bench/README.md, are checked too: each must name a file of the repository, and a #fragment must
// name a heading of the page it points to (see the last tests).
//
// How it works
// ------------
// Each fenced block whose language is js, mjs, cjs, ts (or javascript,
// typescript) is an example. It runs as a program of its own: `node FILE` in a
// fresh temp directory whose node_modules/uds-ipc is a symlink to this
// repository, so `import ... from 'uds-ipc'` / `require('uds-ipc')` load the
// built package (dist/, built by `npm test`'s pretest) through its exports
// map, as a user's program would. A block runs as an ES module (.mjs) unless
// its language is cjs. TypeScript blocks are compiled with
// `ts.transpileModule` first, and are also type-checked against the package's
// declarations (dist/*.d.ts) in one tsc program.
//
// A run fails if the program throws, exits non-zero, is killed by a signal, or
// takes longer than RUN_TIMEOUT_MS; and, when the page shows its output, if
// stdout differs. Expected output is written either as comments in the block,
//     console.log(x); // prints: TEXT          (one line), or
//     // prints:                               (several: the comment lines
//     // LINE 1                                 that follow, up to the first
//     // LINE 2                                 line that is not a comment)
// or as a ```text block marked `<!-- example: group=G output=FILE -->`.
// stdout must then be exactly those lines; stderr is never checked (examples
// may console.warn) but is shown when a run fails.
//
// Socket paths: a string literal starting with /run/ or /tmp/ (e.g.
// '/run/myapp/ipc.sock') is moved into the example's temp directory
// ('<tmp>/run/myapp/ipc.sock'), so examples never touch the real /run or /tmp
// and never collide. Nothing else in the example text is changed, except by an
// explicit `replace=` marker.
//
// Markers: an HTML comment on the line(s) before a block (blank lines allowed),
// invisible on GitHub:
//   <!-- example -->                 a complete program (the default without a marker)
//   <!-- example: prelude=NAME -->   a fragment: PRELUDES[NAME] (below) provides
//        its context (`reader`, `writer`, `path`, `lines`, `handle()`, ...)
//        before it and cleans up after it. A fragment also gets the names it
//        uses from 'uds-ipc' imported (as the docs say the fragments do).
//   replace=FROM:TO                  literal text replacement in the block
//        (used to serve the metrics example on port 0 instead of 9100)
//   after=NAME                       AFTER[NAME] runs after the block: checks
//        what the block set up (e.g. fetches the metrics it serves)
//   group=G file=NAME                several programs of one example (reader.mjs
//        and writer.mjs): all blocks of group G (of one page) are written as
//        the named files and started in page order, at once. Each must exit 0
//        by itself,
//        except:
//   stop=SIGTERM                     a server: it gets this signal once every
//        other program of the group has exited and it has printed its
//        expected output, and must then exit 0.
//   activate=PATH#FDNAME send=TEXT   started by systemd-socket-activate (the
//        real tool) listening on PATH with --fdname=FDNAME, as docs/systemd.md
//        says; the runner then sends TEXT to PATH with the
//        package's CLI (`uds-ipc send`), which starts the program.
//   group=G output=FILE              on a ```text block: FILE's expected stdout.
//   needs=nats-server                the example talks to a NATS server: it runs
//        in `npm run test:nats` (test/nats/readme-examples-nats.test.ts),
//        which starts one and passes its URL as NATS_URL.
//
// No example is skipped: the first test checks that every JS/TS block was
// found and is run (or is a file of a group that runs), that every marker is
// understood, and that there are at least MIN_EXAMPLES of them in all.
//
// The machinery is in test/examples.ts. The examples that need
// systemd-socket-activate (an `activate=` marker; Debian package `systemd`,
// which a fresh machine lacks) run in `npm run test:systemd`
// (test/tool/readme-examples-activate.test.ts), all others here; the first
// test "finds every JS/TS example ..." checks that every example runs in
// exactly one of the two.
import { needsActivate, needsNats, registerExampleTests } from './examples';

registerExampleTests({ select: (ex) => !needsActivate(ex) && !needsNats(ex), checks: true });
