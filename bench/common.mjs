// bench/README.md upkeep shared by the bench scripts (run.mjs, memory.mjs,
// native.mjs): each rewrites its own part of the file and keeps the others'.
// What the role processes measure, and how they are run, is src/bench/
// (shared with `uds-ipc bench`).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces the part of `file` between the `start` and `end` markers (markers
 * included) with `start + body + end`, or appends it. bench/run.mjs rewrites
 * the rest of bench/README.md and keeps these sections.
 */
export function replaceSection(file, start, end, body) {
  const section = `${start}\n${body.trim()}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) text = text.slice(0, a) + section + text.slice(b + end.length);
  else text = `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}

/** The sections of `text` between start/end marker pairs (markers included), in order. */
export function keptSections(text, markers) {
  const out = [];
  for (const [start, end] of markers) {
    const a = text.indexOf(start);
    const b = text.indexOf(end);
    if (a >= 0 && b > a) out.push(text.slice(a, b + end.length));
  }
  return out;
}

/**
 * Checks a bench script's command line before it runs anything (a script
 * that ran its whole benchmark and rewrote bench/README.md for `--help` or
 * a misspelt option would waste minutes and overwrite results). `valued`:
 * options that take a value; `flags`: options that do not. Prints `usage`
 * and exits for --help / -h (0) or anything else unknown (2).
 */
export function checkArgs(usage, valued, flags = []) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(`${usage.trimEnd()}\n`);
      process.exit(0);
    }
    if (flags.includes(a)) continue;
    if (valued.includes(a) && i + 1 < argv.length) {
      i++;
      continue;
    }
    process.stderr.write(`${valued.includes(a) ? `${a} needs a value` : `unknown option ${a}`}\n${usage.trimEnd()}\n`);
    process.exit(2);
  }
}
